"""memcached:// as the cache, and the clients people pass as ``cache=``, against real servers."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from offload.adapters import DjangoCache, adapt_cache, adapt_queue
from offload.backends import ExpiryRule, IndexEntry, open_backend
from offload.backends.memcached import MemcachedCache
from offload.errors import BackendUnavailable, ConfigurationError
from tests.integrations import flask_app
from tests.integrations.stacks import assert_served_from_cache, get
from tests.servers import MemcachedServer

pymemcache = pytest.importorskip("pymemcache")


def test_memcached_is_a_cache_without_a_queue(memcached: MemcachedServer) -> None:
    backend = open_backend(memcached.url)
    assert backend.queue is None
    with pytest.raises(ConfigurationError, match="has no queue"):
        adapt_queue(memcached.url)
    assert isinstance(adapt_cache(memcached.url), MemcachedCache)


def test_index_keeps_every_answer_of_concurrent_writers(memcached: MemcachedServer) -> None:
    """Eight processes' worth of clients listing answers in one index entry at once lose none of them."""
    url = f"{memcached.url}?index_buckets=1"
    caches = [MemcachedCache.from_url(url) for _ in range(8)]
    barrier = threading.Barrier(len(caches))

    def write(n: int, cache: MemcachedCache) -> None:
        barrier.wait(timeout=30)
        for i in range(25):
            cache.set(f"offload:r:{n}-{i}", b"answer", 60, IndexEntry(f"/r/{n}/{i}", "a=1", failed=i == 0))

    threads = [threading.Thread(target=write, args=(n, cache)) for n, cache in enumerate(caches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert caches[0].stats() == {"cached": 8 * 24, "failed": 8}
    assert caches[0].expire(ExpiryRule("/r/3/*")) == 25
    assert caches[0].get("offload:r:3-7") is None
    assert caches[0].expire(ExpiryRule("/r/*", (("a", "1"),))) == 7 * 25
    assert caches[0].stats() == {"cached": 0, "failed": 0}
    for cache in caches:
        cache.close()


def test_large_answers_are_chunked_and_a_lost_chunk_is_a_miss(memcached: MemcachedServer) -> None:
    cache = MemcachedCache.from_url(memcached.url)
    big = bytes(range(256)) * 12_000  # 3 MB: over memcached's 1 MiB item limit
    cache.set("offload:r:big", big, 60, IndexEntry("/big", ""))
    assert cache.get("offload:r:big") == big
    assert cache.touch("offload:r:big", 120)
    header = json.loads(cache.client.get("offload:r:big").partition(b"\n")[2])
    assert header["n"] > 1
    cache.client.delete(f"offload:r:big:c:{header['id']}:1")
    assert cache.get("offload:r:big") is None
    cache.close()


def test_garbage_in_the_index_is_a_fresh_start(memcached: MemcachedServer) -> None:
    cache = MemcachedCache.from_url(f"{memcached.url}?index_buckets=1")
    cache.client.set("offload-index:0", b"cos\nsystem\n(S'echo pwned'\ntR.")
    assert cache.stats() == {"cached": 0, "failed": 0}
    cache.set("offload:r:x", b"v", 60, IndexEntry("/x", ""))
    assert cache.stats() == {"cached": 1, "failed": 0}
    cache.close()


def test_backend_down_and_back(memcached: MemcachedServer, tmp_path: Path, count_dir: Path, make_app: Any) -> None:
    app = make_app({"cache": memcached.url, "queue": f"sqlite:///{tmp_path / 'queue.sqlite3'}"})
    memcached.stop()
    down = get(app, "/report/d")
    assert down.status_code == 503
    assert down.headers["Retry-After"] == "1"
    memcached.start()
    assert get(app, "/report/d").status_code == 202
    assert flask_app.executions("d") == 0


def test_full_cycle_with_offload_worker(
    memcached: MemcachedServer, tmp_path: Path, count_dir: Path, make_app: Any
) -> None:
    """cache= a memcached URL, queue= a SQLite URL: the two parts from two engines."""
    from offload.replay import replayer_for
    from offload.worker import Worker

    app = make_app({"cache": memcached.url, "queue": f"sqlite:///{tmp_path / 'queue.sqlite3'}"})
    assert get(app, "/report/m").status_code == 202
    assert get(app, "/report/m").status_code == 202
    Worker(app.wsgi_app.offloader, replayer_for(app.wsgi_app), burst=True).run(install_signals=False)
    assert flask_app.executions("m") == 1
    assert_served_from_cache(app, "m")
    assert app.wsgi_app.offloader.cache.stats() == {"cached": 1, "failed": 0}
    assert app.wsgi_app.expire("/report/*") == 1
    assert get(app, "/report/m").status_code == 202


def test_pymemcache_client_add_waits_for_the_reply(memcached: MemcachedServer) -> None:
    """pymemcache's add defaults to noreply, which always says "stored": the adapter must ask for the reply."""
    client = pymemcache.client.base.Client(("127.0.0.1", memcached.port), default_noreply=True)
    cache = adapt_cache(client)
    assert cache.add("offload:p:k", b"one", 30) is True
    assert cache.add("offload:p:k", b"two", 30) is False
    assert cache.get("offload:p:k") == b"one"
    client.close()


def test_pymemcache_client_that_unpickles_is_refused(memcached: MemcachedServer) -> None:
    client = pymemcache.client.base.Client(("127.0.0.1", memcached.port), serde=pymemcache.serde.pickle_serde)
    with pytest.raises(ConfigurationError, match="unpickle"):
        adapt_cache(client)


def test_pymemcache_client_down_is_backend_unavailable(memcached: MemcachedServer) -> None:
    client = pymemcache.client.base.Client(("127.0.0.1", memcached.port), connect_timeout=1, timeout=1)
    cache = adapt_cache(client)
    memcached.stop()
    with pytest.raises(BackendUnavailable):
        cache.add("offload:p:k", b"one", 30)
    client.close()


def test_django_cache_adds_atomically_but_cannot_expire() -> None:
    from django.core.cache.backends.locmem import LocMemCache

    cache = adapt_cache(LocMemCache("offload-tests", {}))
    assert isinstance(cache, DjangoCache)
    assert cache.add("offload:p:k", b"one", 30) is True
    assert cache.add("offload:p:k", b"two", 30) is False
    assert cache.get("offload:p:k") == b"one"
    with pytest.raises(ConfigurationError, match="redis://"):
        cache.expire(ExpiryRule("/reports/*"))
    with pytest.raises(ConfigurationError, match="cannot list"):
        cache.stats()
