"""The control socket: a JSON protocol over a Unix stream socket (docs/protocol.md)."""
