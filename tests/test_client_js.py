"""offloadFetch in a real browser: the README's page, served by the README's Flask app and worker, in headless Chromium.

Chromium and its driver are Debian's (``apt-get install chromium
chromium-driver``, as ``.ci/run`` does); selenium drives them, and nothing is
downloaded at run time (``SE_OFFLINE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from offload.routes import CLIENT_SCRIPT
from tests.examples import ROOT, Document, Example, example, wait_for
from tests.servers import headless_chromium

README = Document(ROOT / "README.md")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        driver.set_script_timeout(30)
        yield driver


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """The README's Flask extension app with its page, served by gunicorn, its jobs run by ``flask offload worker``."""
    with example(tmp_path_factory.mktemp("site")) as ex:
        ex.write(README.block("from offload.contrib.flask import Offload, offload"))
        ex.write(README.block("<!-- static/report.html -->"))
        ex.shell(README.block("flask --app myapp offload worker"))
        wait_for(ex.listening, 60, "the README's app to listen")
        yield ex


def test_the_readme_page_shows_the_report_once_a_worker_computed_it(browser: Any, site: Example) -> None:
    browser.get(f"http://127.0.0.1:{site.port}/static/report.html")
    text = wait_for(
        lambda: (lambda shown: shown if shown != "computing the report…" else None)(
            browser.find_element("id", "report").text
        ),
        30,
        "the page to show the report",
    )
    assert text == '{"total":42}', site.logs()


def fetch(browser: Any, site: Example, script: str) -> Any:
    """Run ``script`` (an async function body that may await offloadFetch) in a page of the site; its result."""
    browser.get(f"http://127.0.0.1:{site.port}/_offload/offload.js")  # same origin; defines nothing by itself
    return browser.execute_async_script(
        f"""
        const done = arguments[arguments.length - 1];
        const loaded = new Promise((resolve) => {{
          const tag = document.createElement("script");
          tag.src = "/_offload/offload.js";
          tag.onload = resolve;
          document.head.appendChild(tag);
        }});
        const failed = (error) => done({{error: error.name, message: error.message}});
        loaded.then(async () => {{ {script} }}).then(done, failed);
        """
    )


def test_it_resolves_with_the_final_response_and_reports_each_202(browser: Any, site: Example) -> None:
    result = fetch(
        browser,
        site,
        """
        let pending = 0;
        const response = await offloadFetch("/report?from=script", {wait: 0, onPending: () => { pending += 1; }});
        return {status: response.status, body: await response.text(), pending: pending};
        """,
    )
    assert result["status"] == 200 and result["body"] == '{"total":42}\n', result
    assert result["pending"] >= 1, "without Prefer: wait, the first answer was a 202"


def test_by_default_the_server_holds_the_request_until_the_answer_is_stored(browser: Any, site: Example) -> None:
    result = fetch(
        browser,
        site,
        """
        let pending = 0;
        const response = await offloadFetch("/report?from=waiting", {onPending: () => { pending += 1; }});
        return {
          status: response.status, body: await response.text(), pending: pending,
          applied: response.headers.get("Preference-Applied"),
        };
        """,
    )
    assert result["status"] == 200 and result["body"] == '{"total":42}\n', result
    assert (result["pending"], result["applied"]) == (0, "wait=10"), "one request, held until the answer was stored"


def test_a_response_that_is_not_202_is_resolved_as_it_is(browser: Any, site: Example) -> None:
    result = fetch(browser, site, 'const r = await offloadFetch("/no-such-page"); return {status: r.status};')
    assert result == {"status": 404}


def test_the_deadline_rejects_with_a_timeout_error_and_a_signal_aborts(browser: Any, site: Example) -> None:
    site.stop("flask")  # no worker from here on: offloaded URLs answer 202 for ever
    timed_out = fetch(browser, site, 'await offloadFetch("/report?never=1", {deadline: 1500}); return "resolved";')
    assert timed_out["error"] == "TimeoutError", timed_out
    aborted = fetch(
        browser,
        site,
        """
        const controller = new AbortController();
        setTimeout(() => controller.abort(), 300);
        await offloadFetch("/report?never=2", {signal: controller.signal});
        return "resolved";
        """,
    )
    assert aborted["error"] == "AbortError", aborted


def test_the_script_is_served_with_a_validator(site: Example) -> None:
    script = site.get("/_offload/offload.js")
    assert script.header("Content-Type") == "text/javascript; charset=utf-8"
    assert script.body == CLIENT_SCRIPT.read_bytes()
    etag = script.header("ETag")
    assert etag and site.get("/_offload/offload.js", {"If-None-Match": etag}).status == 304
