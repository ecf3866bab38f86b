"""docker-compose.yml validates with `docker-compose config -q` (no engine needed) and has the
services of Dagster's deploy_docker layout; .env.example, deploy/ and docker/ agree with it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from servers import in_ci

from trading_pipelines.ledger.db import default_venue_url

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"postgres", "minio", "trading_user_code", "dagster_webserver", "dagster_daemon"}
DAGSTER_SERVICES = ("trading_user_code", "dagster_webserver", "dagster_daemon")

pytestmark = pytest.mark.compose


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    message = "docker-compose not found (apt-get install docker-compose)"
    if in_ci():
        pytest.fail(f"{message}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(f"{message} -- install it, or set CI=1 to make this a failure")


def clean_env() -> dict[str, str]:
    """The environment without any variable the compose file interpolates (so .env.example decides)."""
    names = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    return {k: v for k, v in os.environ.items() if k not in names}


def run_compose(*args: str, env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    cmd = compose_command() + (["--env-file", str(env_file)] if env_file else []) + ["-f", str(COMPOSE), *args]
    # run from an empty dir so a developer's own .env cannot leak in
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=ROOT / "docker", timeout=60)


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_compose_config_validates_with_the_example_env():
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_plain_config_validates_and_secrets_fail_closed(tmp_path):
    """`docker-compose config -q` passes on a clean checkout (no .env); the secrets then resolve
    empty, which the postgres image ("superuser password is not specified") and minio
    (root password shorter than 8 characters) refuse at start: a missing secret fails closed."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    assert run_compose("config", "-q", env_file=None).returncode == 0
    result = run_compose("config", env_file=empty)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] in ("", None)
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] in ("", None)


def test_resolved_services_healthchecks_and_wiring():
    result = run_compose("config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert SERVICES <= set(services)
    for name in ("postgres", "minio", "trading_user_code"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]
    example = env_example()
    for name in DAGSTER_SERVICES:
        svc = services[name]
        assert svc["image"] == "trading_pipelines:latest"
        env = svc["environment"]
        for var in ("DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_DB",
                    "DAGSTER_POSTGRES_PORT", "DAGSTER_HOME", "TRADING_LEDGER_URL", "TRADING_CHART_STORE", "MINIO_ENDPOINT",
                    "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_BUCKET", "MINIO_SECURE"):
            assert env.get(var) not in (None, ""), (name, var)
        assert env["TRADING_LEDGER_URL"] == (f"postgresql+psycopg2://{example['DAGSTER_POSTGRES_USER']}:"
                                             f"{example['DAGSTER_POSTGRES_PASSWORD']}@postgres:5432/{example['TRADING_LEDGER_DB']}")
        assert env["TRADING_CHART_STORE"] == "minio" and env["MINIO_ENDPOINT"] == "minio:9000"
        # indicator frames (FrameStore chunks) go to the same S3 server, the paper venue's own store
        # to the ledger's Postgres server (TRADING_VENUE_URL unset: its default is the ledger URL)
        assert env.get("TRADING_FRAMES_PATH", "").startswith("s3://"), (name, env.get("TRADING_FRAMES_PATH"))
        assert default_venue_url({k: str(v) for k, v in env.items()}) == env["TRADING_LEDGER_URL"], name
    assert services["trading_user_code"]["build"]["dockerfile"].endswith("docker/Dockerfile")
    for name in ("dagster_webserver", "dagster_daemon"):
        assert services[name]["depends_on"]["trading_user_code"]["condition"] == "service_healthy"
    assert services["trading_user_code"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["trading_user_code"]["depends_on"]["minio"]["condition"] == "service_healthy"
    # only loopback port bindings on the host
    for svc in services.values():
        for port in svc.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", port


def test_env_example_covers_every_variable():
    example = env_example()
    compose_vars = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    instance_vars = set(re.findall(r"\{env: ([A-Z0-9_]+)\}", (ROOT / "deploy" / "dagster.yaml").read_text()))
    missing = (compose_vars | instance_vars) - set(example)
    assert not missing, f".env.example lacks {sorted(missing)}"
    secrets = [k for k in example if re.search(r"PASSWORD|SECRET", k)]
    assert secrets and all(example[k].startswith("change-me") for k in secrets)  # placeholders only


def test_static_files_agree():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert "COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in dockerfile
    assert "pip install -e ." in dockerfile
    workspace = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
    (server,) = workspace["load_from"]
    compose = yaml.safe_load(COMPOSE.read_text())
    command = compose["services"][server["grpc_server"]["host"]]["command"]
    assert str(server["grpc_server"]["port"]) == command[command.index("-p") + 1]
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    init = ROOT / "docker" / "postgres-initdb" / "10-trading-ledger.sh"
    assert init.is_file() and "TRADING_LEDGER_DB" in init.read_text()
