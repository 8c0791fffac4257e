"""The Django app: checks ``settings.OFFLOAD`` at startup, and reads it again when a test overrides it."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed


class OffloadConfig(AppConfig):
    name = "offload.contrib.django"
    label = "offload"
    verbose_name = "offload"

    def ready(self) -> None:
        from offload.contrib.django import conf

        setting_changed.connect(_setting_changed, dispatch_uid="offload-setting-changed")
        conf.project()  # a wrong OFFLOAD setting stops the project here, with ImproperlyConfigured


def _setting_changed(setting: str, **kwargs: Any) -> None:
    from offload.contrib.django import conf

    if setting in ("OFFLOAD", "CACHES", "ROOT_URLCONF", "MIDDLEWARE"):
        conf.reset()
