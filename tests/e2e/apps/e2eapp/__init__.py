"""Handlers the end-to-end tests' configurations point at (`path:` holds tests/e2e/apps)."""
