"""A module the `orders` program preloads in its leader: imported once, shared by every
worker. Edit it, and `qsupervisorctl status` reports the preload as stale until
`qsupervisorctl reload orders --preload`."""

PRICES = {"book": 1200, "pen": 150, "lamp": 4500}  # cents

VERSION = 1
