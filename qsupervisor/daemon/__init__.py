"""qsupervisord: command line, daemonizing, pidfile and systemd glue."""
