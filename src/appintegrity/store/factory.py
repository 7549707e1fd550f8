"""Choose a store by URL, as written in the configuration file.

* ``sqlite:///relative/path.db`` (relative to the working directory), ``sqlite:////abs/path.db``,
  ``sqlite:///:memory:`` (tests only: nothing is shared or kept).
* ``postgresql://user@host:port/db`` (also ``postgres://``): everything durable in PostgreSQL.
  ``?schema=name`` (lower case: ``[a-z_][a-z0-9_]*``) keeps the tables in that schema (created
  by ``migrate()``), which isolates tests and tenants. Pool settings:
  ``?pool_min=2&pool_max=10&pool_timeout=5`` (seconds). Other parameters go to libpq as written.
* ``postgresql://…`` with ``cache_url="redis://…"``: durable records in PostgreSQL; challenges,
  consumed token ids and rate-limit counters in Redis (the composite store).
* ``redis://host:port/db`` (``rediss://`` for TLS) alone: everything in Redis. Only as durable as
  the Redis server's persistence (AOF with ``appendfsync always`` for keys to survive a crash).
  ``?prefix=name`` namespaces every key, ``?timeout=2`` sets the socket timeout (seconds),
  ``?max_connections=100`` bounds the pool (a burst beyond it waits up to ``timeout``).

Nothing connects here; the first operation (normally ``migrate()``) does.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from appintegrity.errors import ConfigError
from appintegrity.store.base import Store

__all__ = ["open_store", "sqlite_file"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def open_store(url: str, cache_url: str | None = None) -> Store:
    """The store for ``url`` (and the Redis ``cache_url`` for hot state, with PostgreSQL).

    An empty ``cache_url`` means none: deployments pass ``--cache "$APPINTEGRITY_SERVER__CACHE"``
    whether or not they set the variable.
    """
    if cache_url is not None and not cache_url.strip():
        cache_url = None
    scheme = _scheme(url)
    if cache_url is not None and scheme not in _POSTGRES_SCHEMES:
        raise ConfigError(f"a cache URL is only supported with a postgresql:// store, not {scheme}")
    if scheme == "sqlite":
        from appintegrity.store.sqlite import SQLiteStore

        return SQLiteStore(_sqlite_path(url))
    if scheme in _POSTGRES_SCHEMES:
        from appintegrity.store.postgres import PostgresStore

        durable = PostgresStore.from_url(url)
        if cache_url is None:
            return durable
        if _scheme(cache_url) not in _REDIS_SCHEMES:
            raise ConfigError("the cache URL must be redis://…")
        from appintegrity.store.composite import CompositeStore
        from appintegrity.store.redis import RedisStore

        return CompositeStore(durable, RedisStore.from_url(cache_url))
    if scheme in _REDIS_SCHEMES:
        from appintegrity.store.redis import RedisStore

        return RedisStore.from_url(url)
    raise ConfigError(
        f"unknown store URL scheme {scheme!r}: use sqlite:///…, postgresql://… or redis://…"
    )


def sqlite_file(url: str) -> str | None:
    """The database file a ``sqlite:///`` URL names; None for other stores and ``:memory:``."""
    if _scheme(url) != "sqlite":
        return None
    path = _sqlite_path(url)
    return None if path == ":memory:" else path


def _sqlite_path(url: str) -> str:
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix) or len(url) == len(prefix):
        raise ConfigError("a SQLite store URL is sqlite:///relative.db or sqlite:////absolute.db")
    path = url[len(prefix) :]
    if "?" in path or "#" in path:
        raise ConfigError("a SQLite store URL takes no query string")
    return path
