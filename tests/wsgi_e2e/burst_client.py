"""A client process for the concurrency tests: many GETs for one URL, all released at one instant.

Run as ``python -m tests.wsgi_e2e.burst_client PORT TARGET START_AT THREADS``:
the threads wait for the wall-clock time ``START_AT``, then each sends one GET;
the statuses are printed as a JSON list.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time


def get(port: int, target: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", target)
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def main(port: int, target: str, start_at: float, threads: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        status = get(port, target)
        with lock:
            statuses.append(status)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))))
