"""`appintegrity db migrate` and the admin commands with the store flags deploy.md documents."""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from appintegrity.cli import main


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL store URL in a fresh schema, dropped after the test."""
    schema = f"cli_{uuid.uuid4().hex[:12]}"
    yield f"{postgres_url}?schema={schema}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("cache", ["", " "])
def test_an_empty_cache_url_means_postgresql_only(postgres_store: str, cache: str) -> None:
    # deploy.md: db migrate --cache "$APPINTEGRITY_SERVER__CACHE", the variable empty or unset.
    status, out, err = cli("db", "migrate", "--store", postgres_store, "--cache", cache)
    assert status == 0, err
    assert out.startswith("schema up to date: ")
    status, out, err = cli("signing-key", "rotate", "--store", postgres_store, "--cache", cache)
    assert status == 0, err
    assert out.startswith("new signing key ")


def test_an_empty_cache_url_with_sqlite_is_no_cache_either(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'plain.db'}"
    status, _, err = cli("db", "migrate", "--store", store, "--cache", "")
    assert status == 0, err
    assert (tmp_path / "plain.db").is_file()


def test_a_cache_url_with_sqlite_is_still_refused(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'plain.db'}"
    status, _, err = cli("db", "migrate", "--store", store, "--cache", "redis://127.0.0.1:6379/0")
    assert status == 2
    assert "only supported with a postgresql:// store" in err
