"""One cluster of service processes per test module, started when the first test needs it.

The cluster lives for the module (starting three processes costs seconds on a 2-core machine),
but it is started from a function-scoped fixture that takes ``postgres_url`` and ``redis_url``,
so the usual skip (or, under ``APPINTEGRITY_REQUIRE_SERVICES=1``, failure) applies. Its schema
and key prefix are fresh and are removed when the module ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appintegrity.testing.ios import AppAttestCA

from .cluster import Cluster, ProxyThread, SharedStores


class LazyCluster:
    """Starts a cluster on first use with ``build``; stops it and drops its data at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = AppAttestCA.generate()
        self.cluster: Cluster | None = None
        self.stores: SharedStores | None = None
        self.proxies: dict[str, ProxyThread] = {}  # backends reached through a proxy, if any
        self._cleanups: list[Callable[[], None]] = []

    def shared_stores(self, postgres_url: str, redis_url: str) -> SharedStores:
        """The module's schema and key prefix, chosen once."""
        if self.stores is None:
            self.stores = SharedStores(postgres_url, redis_url)
            self._cleanups.append(self.stores.drop)
        return self.stores

    def get(self, build: Callable[[LazyCluster], Cluster]) -> Cluster:
        if self.cluster is None:
            self.cluster = build(self)
            self._cleanups.insert(0, self.cluster.stop)
            self.cluster.start()
        return self.cluster

    def on_close(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.insert(0, cleanup)

    def close(self) -> None:
        for cleanup in self._cleanups:
            cleanup()


@pytest.fixture(scope="module")
def lazy_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LazyCluster]:
    holder = LazyCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield holder
    finally:
        holder.close()


@pytest.fixture
def shared_stores(lazy_cluster: LazyCluster, postgres_url: str, redis_url: str) -> SharedStores:
    """Reachability is checked for every test (skip, or fail in CI); the schema and prefix are
    the module's."""
    return lazy_cluster.shared_stores(postgres_url, redis_url)
