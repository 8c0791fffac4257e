"""``manage.py offload_worker``: run the project's offloaded jobs through the whole Django stack."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

LEVELS = {0: "WARNING", 1: "INFO", 2: "DEBUG", 3: "DEBUG"}


class Command(BaseCommand):
    help = "Run offloaded jobs: replay each request through the project and store the answer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", "-c", type=int, default=1, help="Jobs run at once (threads).")
        parser.add_argument("--burst", action="store_true", help="Exit when the queue is empty.")
        parser.add_argument(
            "--nice", type=int, default=10, help="Lower the worker's CPU priority by this much (default 10)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from offload.contrib.django.conf import project
        from offload.errors import OffloadError
        from offload.logs import LOG_FORMAT
        from offload.replay import replayer_for
        from offload.worker import Worker

        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        library = logging.getLogger("offload")
        if not library.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            library.addHandler(handler)
            library.propagate = False
        library.setLevel(LEVELS.get(options["verbosity"], "INFO"))
        current = project()
        try:
            queue = current.offloader.queue
        except OffloadError as error:
            raise CommandError(str(error)) from None
        if not getattr(queue, "claimable", True):
            raise CommandError(f"{type(queue).__name__} is run by its own workers (rq worker, celery worker)")
        library.info(
            "worker for namespace %s on %s, %d thread(s)",
            current.offloader.namespace,
            current.offloader.url,
            options["concurrency"],
        )
        if options["nice"]:
            with contextlib.suppress(OSError):
                os.nice(options["nice"])
        replay = replayer_for(current.app)
        worker = Worker(current.offloader, replay, concurrency=options["concurrency"], burst=options["burst"])
        raise SystemExit(worker.run())
