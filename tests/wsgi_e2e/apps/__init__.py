"""Apps the end-to-end suite serves over real HTTP: Flask, Django and a plain WSGI callable.

Each handler appends one line per execution to the file named by
``OFFLOAD_E2E_LOG`` (see :mod:`tests.wsgi_e2e.apps.common`), so tests in
another process can count exactly how often it ran, and where.
"""
