"""A handler module that cannot be imported: its program's workers never start."""

raise ImportError("e2eapp.broken cannot be imported (on purpose)")
