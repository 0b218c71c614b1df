"""qsupervisorctl: talks to qsupervisord over its control socket."""
