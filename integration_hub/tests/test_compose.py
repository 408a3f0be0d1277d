"""docker-compose.yml defines the production-like stack with health checks and one shared configuration."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SERVICES = {"postgres", "redis", "web", "worker", "beat"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_service_is_defined_with_a_health_check(compose):
    services = compose["services"]
    assert set(services) >= SERVICES
    for name in SERVICES:
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"


def test_hub_services_share_one_image_and_configuration(compose):
    services = compose["services"]
    hub = [services[name] for name in ("web", "worker", "beat")]
    assert len({repr(s.get("image")) for s in hub}) == 1
    assert len({repr(s.get("environment")) for s in hub}) == 1
    assert len({repr(s.get("env_file")) for s in hub}) == 1
    for service in hub:
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis")
        assert set(service["depends_on"]) >= {"postgres", "redis"}
        for dependency in ("postgres", "redis"):
            assert service["depends_on"][dependency]["condition"] == "service_healthy"


def test_docker_compose_accepts_the_file_where_it_is_installed():
    if not shutil.which("docker"):
        pytest.skip("docker is not installed")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
