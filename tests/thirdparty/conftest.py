"""Third-party apps behind offload: httpbin, Datasette and a Django project, served by real servers."""

from __future__ import annotations

import pytest

# The apps and the Django project are imported by the processes that serve them, not collected as tests.
collect_ignore = ["apps", "djangoproject"]

# Its assertions compare answers: pytest explains them only in a module it rewrites.
pytest.register_assert_rewrite("tests.thirdparty.harness")
