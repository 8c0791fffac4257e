"""Every job a worker runs keeps its lease, even when two claims carry the same token.

A Redis claim's token is its consumer and delivery count, so two jobs handed
back once and then claimed by one worker carry equal tokens. The worker must
renew both leases; if it renewed one, the other job's lease would lapse
mid-run and an idle thread would run it a second time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from offload.backends.redis_queue import RedisQueue
from offload.replay import replayer_for
from offload.worker import Worker
from offload.wsgi import WSGIMiddleware

runs: list[str] = []
lock = threading.Lock()


def slow_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    with lock:
        runs.append(environ["PATH_INFO"])
    time.sleep(3)  # twice the lease: only the heartbeat keeps the job
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]


def test_jobs_with_equal_tokens_both_keep_their_lease(redis_url: str) -> None:
    runs.clear()
    middleware = WSGIMiddleware(slow_app, url=redis_url, lease=1.5, worker_threads=0)
    for path in ("/a", "/b"):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": ""}
        middleware(environ, lambda status, headers, exc_info=None: None)
    queue = middleware.offloader.queue
    assert isinstance(queue, RedisQueue)
    other = RedisQueue(queue.redis, queue.namespace)  # another consumer takes both jobs once and hands them back
    other._consumer = ("other-worker", 0)
    taken = [other.claim(30, 1), other.claim(30, 1)]
    for claim in taken:
        assert claim is not None
        other.release(claim)
    worker = Worker(middleware.offloader, replayer_for(middleware), concurrency=3, burst=True, claim_wait=0.2)
    done = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    done.start()
    done.join(60)
    assert sorted(runs) == ["/a", "/b"], "a job whose lease lapsed mid-run was run again"
    middleware.offloader.cache.close()
    queue.close()
