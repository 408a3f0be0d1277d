"""`manage.py help` needs no configuration, while every command that does something still refuses to start
without the required settings."""

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from integration_hub.testing import MAPPING, person, write_csv
from sync.models import SyncSource

BASE_DIR = Path(__file__).resolve().parents[2]
OUR_COMMANDS = (
    "addsite", "addsource", "deadletters", "reconcile", "rotate_token_keys", "sync",
    "healthcheck", "demousers",
)  # fmt: skip

# settings.py reads BASE_DIR/.env: a developer's file there would configure the "unconfigured" runs.
needs_no_dotenv = pytest.mark.skipif((BASE_DIR / ".env").exists(), reason="a .env file configures the hub")


def manage(*args: str) -> subprocess.CompletedProcess:
    """manage.py with no environment variable at all."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env={}, capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_command_with_no_environment():
    result = manage("help")
    assert result.returncode == 0, result.stderr
    for command in OUR_COMMANDS:
        assert f"    {command}\n" in result.stdout
    assert "settings are not properly configured" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("help", "addsource"),
        ("addsource", "--help"),
        ("sync", "-h"),
        ("help", "migrate"),
        ("help", "healthcheck"),
    ],
)
def test_help_for_one_command_works_with_no_environment(args):
    result = manage(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: manage.py ")
    if "addsource" in args:
        assert "--config" in result.stdout and "--id-column" in result.stdout


@needs_no_dotenv
@pytest.mark.parametrize(
    "args",
    [
        ("migrate",),
        ("check",),
        ("runserver", "--noreload"),
        ("sync", "north"),
        ("addsource", "north", "--kind", "csv"),
        ("migrate", "--", "--help"),  # an argument passed on after --, not a request for help
    ],
)
def test_a_real_command_still_refuses_to_start_without_settings(args):
    result = manage(*args)
    assert result.returncode != 0
    assert "ImproperlyConfigured: Set the SECRET_KEY environment variable" in result.stderr


def test_the_placeholders_cover_exactly_what_settings_require():
    """manage.py names the required values; settings.py is where they are required."""
    tree = ast.parse((BASE_DIR / "integration_hub" / "settings.py").read_text())
    required = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_required"
    }
    sys.path.insert(0, str(BASE_DIR))
    try:
        import manage as entry_point
    finally:
        sys.path.pop(0)
    assert set(entry_point.REQUIRED_SETTINGS) == required


# --- what the README's command table says about addsource --------------------------------------------


@pytest.fixture
def files(tmp_path):
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    people = write_csv(tmp_path / "people.csv", [person(1), person(2)])

    def config(**values) -> str:
        path = tmp_path / "source.json"
        path.write_text(json.dumps(values))
        return str(path)

    return {"mapping": str(mapping), "people": str(people), "config": config}


def addsource(*args: str) -> str:
    out = io.StringIO()
    call_command("addsource", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--kind", "csv", "--path", "people.csv"], "--kind csv needs --id-column COLUMN"),
        (["--kind", "csv", "--id-column", "employee_id"], "--kind csv needs --path FILE"),
        (["--kind", "sql", "--dsn-secret", "HR_DSN", "--table", "people"], "--kind sql needs --id-column"),
        (["--kind", "sql", "--dsn-secret", "HR_DSN", "--id-column", "id"], "--table TABLE or --query SQL"),
        (["--kind", "http"], "--kind http needs --url URL"),
        ([], "say the kind of source: --kind csv|http|sql"),
    ],
)
def test_addsource_names_the_missing_flag(files, args, named):
    with pytest.raises(CommandError, match=named):
        addsource("north", "--mapping", files["mapping"], *args)


def test_addsource_takes_the_kind_and_id_column_from_its_config_file(files, site):
    config = files["config"](kind="csv", path=files["people"], id_column="employee_id")
    output = addsource("north", "--config", config, "--mapping", files["mapping"])
    assert "First record (line 2): E00001 maps to username user00001" in output
    source = SyncSource.objects.get(site=site)
    assert (source.kind, source.config) == ("csv", {"path": files["people"], "id_column": "employee_id"})


def test_addsource_refuses_a_kind_that_contradicts_its_config_file(files, site):
    config = files["config"](kind="http", url="https://hr.example.org/people")
    with pytest.raises(CommandError, match='--kind csv contradicts "kind": "http"'):
        addsource("north", "--kind", "csv", "--config", config, "--mapping", files["mapping"])
