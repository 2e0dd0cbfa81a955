"""What test modules share: the `needs_dot` marker, and a PostgreSQL schema of its own for
each store test.

A test marked `@pytest.mark.needs_dot` draws an image with Graphviz's `dot`. Where `dot` is
installed it runs (it is never skipped there); where it is not, it is skipped with the reason
and how to install it, so `make test` passes on a machine without Graphviz, as the README
promises (images are optional: DOT and Mermaid text need no Graphviz).

PostgreSQL must answer at `$PROCFLOW_TEST_POSTGRES` (default: the `test` database on
127.0.0.1:5432, which `.ci/run` starts when it is down). When it does not, the tests that
need it fail with that reason: they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

DOT_MISSING = (
    "Graphviz's dot is not installed, so images cannot be drawn "
    "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz)"
)

POSTGRES = os.environ.get("PROCFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_dot: the test draws an image with Graphviz's dot (skipped, saying why, without it)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_dot") is not None and shutil.which("dot") is None:
        pytest.skip(DOT_MISSING)


def in_schema(url: str, schema: str) -> str:
    """`url` with its search_path set to `schema` (libpq's `options`)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(POSTGRES, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL does not answer at {POSTGRES} ({error}); start it (`.ci/run` does) and run again")


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A new, empty schema in the test database, dropped with what it holds afterwards."""
    schema = f"pf_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_server() -> str:
    """The URL of the test database itself (for what a test does around the store)."""
    return POSTGRES


@pytest.fixture
def postgres_url(postgres_schema: str) -> str:
    """The URL of a PostgreSQL store in a schema of its own (see `postgres_schema`)."""
    return in_schema(POSTGRES, postgres_schema)


@pytest.fixture
def new_postgres_url() -> Iterator[Callable[[], str]]:
    """Makes PostgreSQL stores, each in a new schema of its own (all dropped afterwards), for
    a test that needs more than one."""
    made: list[str] = []

    def make() -> str:
        schema = f"pf_test_{uuid.uuid4().hex[:12]}"
        with _admin() as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        made.append(schema)
        return in_schema(POSTGRES, schema)

    try:
        yield make
    finally:
        with _admin() as admin:
            for schema in made:
                admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# Tests that need RabbitMQ as a whole run in one xdist worker, one after another: one of them
# stops the broker's app for a while (`test_amqp_distributed.py`), which would break the others.
_BROKER_MODULES = frozenset({"test_amqp.py", "test_amqp_distributed.py", "test_asyncapi.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in _BROKER_MODULES:
            item.add_marker(pytest.mark.xdist_group("rabbitmq"))
