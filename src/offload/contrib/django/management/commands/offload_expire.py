"""``manage.py offload_expire PATH``: drop the project's cached answers for a path pattern, or a tag."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Drop offload's cached answers for PATH ('*' matches anything, e.g. '/reports/*'), or with --tag."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", default=None)
        parser.add_argument(
            "--param", "-p", action="append", default=[], metavar="KEY=VALUE", help="Only answers with KEY=VALUE."
        )
        parser.add_argument("--tag", "-t", default=None, help="Only answers the app tagged with TAG.")

    def handle(self, *args: Any, **options: Any) -> None:
        from offload.contrib.django.conf import project
        from offload.errors import OffloadError

        path, tag = options["path"], options["tag"]
        if path is None and tag is None:
            raise CommandError("name a PATH, a --tag, or both")
        pairs = []
        for param in options["param"]:
            name, sep, value = param.partition("=")
            if not sep or not name:
                raise CommandError(f"--param {param!r} is not KEY=VALUE")
            pairs.append((name, value))
        try:
            count = project().offloader.expire(path, pairs, tag=tag)
        except OffloadError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"expired {count} cached answer{'s' if count != 1 else ''}")
