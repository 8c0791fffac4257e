"""Apps the ASGI tests serve: each module is also a documented usage example (see docs/ASGI.md)."""
