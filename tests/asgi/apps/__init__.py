"""Apps the ASGI tests serve: fuller versions of the examples of docs/ASGI.md (which tests/docsite runs as printed)."""
