"""pytest plugin: embedded PostgreSQL and Redis for the test suite when DATABASE_URL / REDIS_URL are unset.

Loaded with `-p integration_hub.pytest_services` (see pyproject.toml). It must run before pytest-django
reads the settings, hence the wrapper around pytest_load_initial_conftests. Each session gets its own
folder (var/test-PID/), so two test runs on one machine never stop each other's servers; the services
stop and the folder goes when the session ends, so `make test` leaves no process behind.
"""

import atexit
import os
import shutil

import pytest

from integration_hub.devservices import DEFAULT_VAR_DIR, DevServices

_services: DevServices | None = None


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _services
    # Threads such as the live server must not keep connections open past the test database's teardown.
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
    _remove_leftovers()
    _services = DevServices(DEFAULT_VAR_DIR / f"test-{os.getpid()}", persist=False)
    _services.__enter__()
    return (yield)


def _remove_leftovers() -> None:
    """Servers and folders of earlier sessions that were killed before they could clean up."""
    import psutil

    for folder in DEFAULT_VAR_DIR.glob("test-*"):
        pid = folder.name.removeprefix("test-")
        if not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        for process in psutil.process_iter(["cmdline"]):
            # Whole path components only: var/test-12 must not match a live var/test-123.
            if any(
                part == str(folder) or str(folder) + os.sep in part for part in process.info["cmdline"] or []
            ):
                process.kill()
        shutil.rmtree(folder, ignore_errors=True)


def pytest_unconfigure(config):
    _stop()


@atexit.register
def _stop() -> None:
    """Also runs at exit: a session can end before pytest_unconfigure (a conftest that fails to import)."""
    global _services
    if _services is not None:
        _services.stop()
        shutil.rmtree(_services.var_dir, ignore_errors=True)
        _services = None
