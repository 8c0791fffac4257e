"""The dashboard in headless Chromium, through a real server and real workers.

The queue fills and the page shows it; a job that kills its worker becomes a
dead letter, appears on the page and is retried from it; an answer is expired
from the expire box. Screenshots are taken at each step and checked (not
blank, the expected elements present); ``OFFLOAD_SCREENSHOTS=DIR`` copies
them there (``docs/images`` holds the latest).
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operations.conftest import OPS_APP
from tests.servers import headless_chromium
from tests.wsgi_e2e.conftest import Stack, free_port, wait_for


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with headless_chromium(tmp_path / "chromium", "--disable-dev-shm-usage", "--window-size=1280,1100") as driver:
        driver.set_page_load_timeout(30)
        yield driver


def png_is_not_blank(path: Path) -> bool:
    """Whether a PNG shows something: its decoded rows hold many different byte values."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            chunks.append(data[offset + 8 : offset + 8 + length])
        offset += length + 12
    pixels = zlib.decompress(b"".join(chunks))
    return len(set(pixels)) > 40 and pixels.count(0) < 0.995 * len(pixels)


def test_find_retry_and_expire_from_the_page(stack: Stack, browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    flag = tmp_path / "crash"
    flag.touch()
    env = {"OPS_CRASH_FLAG": str(flag), "OFFLOAD_URL": stack.db_url}
    server = stack.serve(OPS_APP, workers=0, web_processes=1, **env)
    port = free_port()
    dashboard = stack.start("dashboard", ["dashboard", "--url", stack.db_url, "--bind", f"127.0.0.1:{port}"])
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shoot(name: str) -> Path:
        path = shots / f"dashboard-{name}.png"
        browser.save_screenshot(str(path))
        assert png_is_not_blank(path), name
        return path

    def text(selector: str) -> str:
        # Read in one script: the page re-renders its lists on every poll, so element handles go stale.
        found = browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e && e.innerText;", selector
        )
        return str(found or "")

    def click(selector: str) -> bool:
        """Click what ``selector`` finds, as a user does; try again if a re-render replaced it meanwhile."""
        try:
            browser.find_element(By.CSS_SELECTOR, selector).click()
        except (StaleElementReferenceException, NoSuchElementException):
            return False
        return True

    section = '.namespace[data-namespace="ops"]'
    for number in (1, 2, 3):
        assert server.get(f"/report?n={number}").status == 202
    wait_for(lambda: stack.output(dashboard).count("WITHOUT --auth"), 30, "the dashboard to start")
    browser.get(f"http://127.0.0.1:{port}/")
    wait_for(lambda: text(f"{section} .stat-queued .value") == "3", 30, "the page to show 3 queued jobs")
    rows = "return document.querySelectorAll(arguments[0]).length"
    assert browser.execute_script(rows, f"{section} table.waiting tbody tr[data-job]") == 3
    assert "figures from the backend" in text("#source")
    shoot("queue")

    worker = stack.start("worker-a", ["worker", OPS_APP], **env)
    assert server.get("/crash").status == 202
    wait_for(lambda: worker.poll() is not None, 60, "the job to kill its worker")
    stack.start("worker-b", ["worker", OPS_APP], **env)
    dead_row = f"{section} table.dead tbody tr[data-job]"
    wait_for(lambda: text(dead_row), 30, "the dead letter on the page")
    assert "/crash" in text(dead_row) and "stopped each time" in text(dead_row)
    assert text(f"{section} .stat-dead .value") == "1"
    assert server.get("/crash").status == 500
    shoot("dead-letter")

    flag.unlink()  # the app is fixed: the retry succeeds
    wait_for(lambda: click(f"{dead_row} button.retry"), 10, "a click on Retry")
    wait_for(lambda: text(f"{section} .stat-dead .value") == "0", 30, "the dead letter to leave the page")
    assert server.poll("/crash").status == 200

    assert server.poll("/report?n=1").status == 200
    browser.find_element(By.ID, "expire-path").send_keys("/report")
    browser.find_element(By.ID, "expire-params").send_keys("n=1")
    wait_for(lambda: click("#expire-button"), 10, "a click on Expire")
    wait_for(lambda: text("#expire-result") == "expired 1 answer", 30, "the expiry to be reported")
    assert server.get("/report?n=1").status == 202  # gone: the next request queues a job
    assert server.get("/report?n=2").status == 200  # the others stay
    shoot("expire")

    keep = os.environ.get("OFFLOAD_SCREENSHOTS")
    if keep:
        for path in shots.iterdir():
            shutil.copy(path, Path(keep) / path.name)
