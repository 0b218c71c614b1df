"""The herald: the daemon's one long-lived broker connection of its own, forked by the
master, that announces the daemon on the broker and keeps the latest announcement of every
daemon heard (the fleet view). See docs/architecture.md, "The herald"."""
