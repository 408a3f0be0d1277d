"""Settings come from the environment; a production deployment missing a value fails with its name."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "SECRET_KEY": "x7#Qm2!vL9pZr4@kT8wYb3&nC6jF1sHd5gE0uA-iO_ZxVqWcPyRtNmKlJhGfDsAa",
    "ALLOWED_HOSTS": "hub.example.edu",
    "DATABASE_URL": "postgres://hub:secret@db.example.edu:5432/hub",
    "REDIS_URL": "redis://redis.example.edu:6379/0",
    "TOKEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV and not k.endswith("_FILE")}
    clean.pop("DEBUG", None)
    clean.pop("HTTPS", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("missing", sorted(PRODUCTION_ENV))
def test_a_missing_production_value_is_named(missing):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"Set the {missing} environment variable" in result.stderr


def test_an_invalid_encryption_key_is_named_by_position():
    result = manage(
        "check", env={**PRODUCTION_ENV, "TOKEN_ENCRYPTION_KEYS": f"{Fernet.generate_key().decode()},nope"}
    )
    assert result.returncode != 0
    assert "TOKEN_ENCRYPTION_KEYS: entry 2 is not a Fernet key" in result.stderr


def test_secrets_can_come_from_files(tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text(PRODUCTION_ENV["SECRET_KEY"] + "\n")
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = manage("check", env={**env, "SECRET_KEY_FILE": str(secret_file)})
    assert result.returncode == 0, result.stderr


def test_deploy_check_is_clean_with_production_values():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
