"""The leader tier: one process per program, between the master and its workers.

`forkserver.py` imports the program's preload list, forks workers when the master asks and
reaps them; `broker.py` is the broker work a leader does (declaring the topology, reading
queue depths). The master starts a leader through `forkserver.fork_leader`, handed to it
by the launcher (daemon/main.py), and never imports this package itself.
"""
