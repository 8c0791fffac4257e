"""A minimal Django project: settings, one URLconf, a few views, and the wrapped WSGI application."""
