"""The Django project is imported by the processes that serve it, not collected (nor doctested) here."""

from __future__ import annotations

collect_ignore = ["djangoproject"]
