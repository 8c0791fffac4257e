"""``manage.py offload_status``: the project's queued, running, dead, cached and failed counts."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Show offload's queued, running, dead, cached and failed counts for this project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the counts as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        from offload.contrib.django.conf import project
        from offload.errors import OffloadError

        offloader = project().offloader
        counts = {"queued": 0, "running": 0, "dead": 0, "cached": 0, "failed": 0}
        try:
            counts.update(offloader.queue.stats())
            counts.update(offloader.cache.stats())
        except OffloadError as error:
            raise CommandError(str(error)) from None
        if options["json"]:
            self.stdout.write(json.dumps(counts))
            return
        self.stdout.write(f"namespace {offloader.namespace}")
        for field, value in counts.items():
            self.stdout.write(f"  {field:8} {value}")
