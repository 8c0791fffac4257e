"""Framework integrations: offload set up the way each framework's own extensions are.

* :mod:`offload.contrib.django`: an app for ``INSTALLED_APPS``, a middleware
  for ``MIDDLEWARE``, the ``OFFLOAD`` setting and ``manage.py offload_worker``.
* :mod:`offload.contrib.flask`: ``Offload(app)`` reading ``OFFLOAD_*`` config
  keys, and ``flask offload worker``.
* :mod:`offload.contrib.starlette`: ``Offload(app)`` for Starlette and FastAPI.

Each takes the options of the middlewares, and offloads only the views
marked with its ``@offload`` decorator (and the paths listed in ``paths``), as
Django's ``cache_page`` and Flask-Caching's ``@cached`` cache only the views
they decorate; ``@no_offload`` keeps a view out of ``paths``. The plain
middlewares (:class:`offload.WSGIMiddleware`, :class:`offload.ASGIMiddleware`)
offload every GET unless told otherwise. Each framework is imported only by
its own module.
"""
