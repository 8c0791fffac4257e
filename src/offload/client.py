"""Clients for offloaded endpoints, on httpx: ask again after a 202 until the answer is there.

offload answers a GET it has not computed yet with an empty ``202 Accepted``
and ``Retry-After``. :class:`Client` and :class:`AsyncClient` follow those
202s: they wait as long as ``Retry-After`` says (a little longer each time,
up to ``max_delay``), ask again, and return the final answer; past
``deadline`` seconds they raise :class:`TimedOut`, and a final answer that is
an error (4xx, 5xx) raises :class:`Failed`. A ``503`` with ``Retry-After``
(the queue is full, the backend is down) is asked again too: offload
recovers by itself. Each request says ``Prefer: wait=N`` (RFC 7240): a server
that supports it may hold the request up to N seconds and answer at once; one
that does not ignores it.

Install httpx (the ``client`` extra, ``pip install -e "/path/to/offload[client]"`` from a checkout)::

    from offload.client import Client

    with Client(base_url="http://127.0.0.1:8000", deadline=30) as client:
        report = client.get("/report", params={"year": 2024}).json()

    # or, once:
    report = offload.client.get("http://127.0.0.1:8000/report").json()

The async twin has the same methods, awaited (``aclose`` for ``close``).
A client of your own (``httpx.Client(...)``, with its auth, headers,
transport) can be passed as ``client=``; it is then yours to close.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from offload.errors import OffloadError

__all__ = ["AsyncClient", "Client", "Failed", "TimedOut", "aget", "get"]


class TimedOut(OffloadError):
    """No final answer came before the deadline."""

    def __init__(self, url: str, deadline: float, last: httpx.Response | None = None) -> None:
        status = f" (last answer: {last.status_code})" if last is not None else ""
        super().__init__(f"no answer for {url} within {deadline:g}s{status}")
        self.url = url
        self.deadline = deadline
        self.response = last


class Failed(OffloadError):
    """The final answer is an error (4xx or 5xx); ``status`` and ``response`` say which."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"GET {response.request.url} answered {response.status_code} {response.reason_phrase}")
        self.status = response.status_code
        self.response = response


@dataclass(frozen=True)
class Polling:
    """How to follow 202s, with no I/O: the sync and async clients share it.

    >>> policy = Polling(deadline=10, wait=5, first_delay=0.5, max_delay=4.0)
    >>> [round(policy.delay(try_number, retry_after=1.0), 2) for try_number in range(5)]
    [1.0, 1.0, 2.0, 4.0, 4.0]
    >>> policy.prefer(remaining=2.6)
    'wait=2'
    """

    deadline: float = 60.0  # seconds from the first request to the last
    wait: float = 10.0  # Prefer: wait=N; 0 sends none
    first_delay: float = 0.5  # the pause after the first 202 when it names no longer one
    max_delay: float = 5.0  # the longest pause, unless Retry-After asks for longer

    def __post_init__(self) -> None:
        for name in ("deadline", "first_delay", "max_delay"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.wait < 0:
            raise ValueError("wait must be >= 0 (0 sends no Prefer header)")

    def pending(self, response: httpx.Response) -> bool:
        """Whether to ask again: a 202, or a 503 that says when to retry."""
        return response.status_code == 202 or (response.status_code == 503 and "retry-after" in response.headers)

    def delay(self, try_number: int, retry_after: float) -> float:
        """The pause before try ``try_number + 1``: what the server asked, or the backoff if longer (capped)."""
        backoff: float = min(self.first_delay * 2.0**try_number, self.max_delay)
        return max(retry_after, backoff)

    def prefer(self, remaining: float) -> str | None:
        """The ``Prefer`` header of a request with ``remaining`` seconds left, or None."""
        seconds = int(min(self.wait, remaining))
        return f"wait={seconds}" if seconds >= 1 else None

    def start(self, url: str) -> Attempts:
        """The bookkeeping of one fetch of ``url``."""
        return Attempts(self, url, time.monotonic())


@dataclass
class Attempts:
    """One fetch in progress: what the next request sends, and what to do with each answer."""

    polling: Polling
    url: str
    started: float
    tries: int = 0
    last: httpx.Response | None = None

    def remaining(self) -> float:
        return self.polling.deadline - (time.monotonic() - self.started)

    def next_request(self) -> tuple[str | None, float]:
        """The ``Prefer`` header and the timeout of the next request; :class:`TimedOut` past the deadline."""
        remaining = self.remaining()
        if remaining <= 0:
            raise TimedOut(self.url, self.polling.deadline, self.last)
        return self.polling.prefer(remaining), remaining

    def after(self, response: httpx.Response) -> float | None:
        """None if ``response`` is final, else the pause before asking again (never past the deadline)."""
        self.last = response
        if not self.polling.pending(response):
            return None
        pause = self.polling.delay(self.tries, retry_after(response))
        self.tries += 1
        return max(0.0, min(pause, self.remaining()))

    def timed_out(self) -> TimedOut:
        return TimedOut(self.url, self.polling.deadline, self.last)


def retry_after(response: httpx.Response) -> float:
    """Seconds the answer's ``Retry-After`` asks for (a number or an HTTP date), 0 without one.

    >>> retry_after(httpx.Response(202, headers={"Retry-After": "2"}))
    2.0
    """
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


def _final(response: httpx.Response, raise_for_failure: bool) -> httpx.Response:
    if raise_for_failure and response.status_code >= 400:
        raise Failed(response)
    return response


def _headers(given: Any, prefer: str | None) -> httpx.Headers:
    headers = httpx.Headers(given)
    if prefer is not None and "prefer" not in headers:
        headers["Prefer"] = prefer
    return headers


class Client:
    """A blocking client that follows offload's 202s; see the module's documentation."""

    def __init__(
        self,
        *,
        client: httpx.Client | None = None,
        deadline: float = 60.0,
        wait: float = 10.0,
        max_delay: float = 5.0,
        raise_for_failure: bool = True,
        **options: Any,
    ) -> None:
        if client is not None and options:
            raise TypeError("pass either client= or httpx options, not both")
        self.polling = Polling(deadline=deadline, wait=wait, max_delay=max_delay)
        self.raise_for_failure = raise_for_failure
        self._owned = client is None
        self.http = client if client is not None else httpx.Client(**options)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET ``url`` until the answer is final; httpx's ``get`` keywords (``params``, ``headers``...) apply."""
        given, timeout = kwargs.pop("headers", None), kwargs.pop("timeout", None)
        attempts = self.polling.start(str(url))
        while True:
            prefer, remaining = attempts.next_request()
            try:
                response = self.http.get(
                    url, headers=_headers(given, prefer), timeout=timeout or httpx.Timeout(remaining), **kwargs
                )
            except httpx.TimeoutException:
                if timeout is None or attempts.remaining() <= 0:
                    raise attempts.timed_out() from None
                raise
            pause = attempts.after(response)
            if pause is None:
                return _final(response, self.raise_for_failure)
            time.sleep(pause)

    def close(self) -> None:
        if self._owned:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient:
    """The async twin of :class:`Client`: ``await client.get(url)``, ``await client.aclose()``."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        deadline: float = 60.0,
        wait: float = 10.0,
        max_delay: float = 5.0,
        raise_for_failure: bool = True,
        **options: Any,
    ) -> None:
        if client is not None and options:
            raise TypeError("pass either client= or httpx options, not both")
        self.polling = Polling(deadline=deadline, wait=wait, max_delay=max_delay)
        self.raise_for_failure = raise_for_failure
        self._owned = client is None
        self.http = client if client is not None else httpx.AsyncClient(**options)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET ``url`` until the answer is final, without blocking the event loop."""
        given, timeout = kwargs.pop("headers", None), kwargs.pop("timeout", None)
        attempts = self.polling.start(str(url))
        while True:
            prefer, remaining = attempts.next_request()
            try:
                response = await self.http.get(
                    url, headers=_headers(given, prefer), timeout=timeout or httpx.Timeout(remaining), **kwargs
                )
            except httpx.TimeoutException:
                if timeout is None or attempts.remaining() <= 0:
                    raise attempts.timed_out() from None
                raise
            pause = attempts.after(response)
            if pause is None:
                return _final(response, self.raise_for_failure)
            await asyncio.sleep(pause)

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()


def get(url: str, *, deadline: float = 60.0, wait: float = 10.0, **kwargs: Any) -> httpx.Response:
    """GET ``url`` once, following 202s, with a client made for it (``httpx.get``'s keywords apply)."""
    with Client(deadline=deadline, wait=wait) as client:
        return client.get(url, **kwargs)


async def aget(url: str, *, deadline: float = 60.0, wait: float = 10.0, **kwargs: Any) -> httpx.Response:
    """The async :func:`get`."""
    async with AsyncClient(deadline=deadline, wait=wait) as client:
        return await client.get(url, **kwargs)
