"""pytest plugin: embedded PostgreSQL and Redis for the test suite when DATABASE_URL / REDIS_URL are unset.

Loaded with `-p integration_hub.pytest_services` (see pyproject.toml). It must run before pytest-django
reads the settings, hence the wrapper around pytest_load_initial_conftests. The services live in
var/test/ and stop when the session ends, so `make test` leaves no process behind.
"""

import os

import pytest

from integration_hub.devservices import DEFAULT_VAR_DIR, DevServices

_services: DevServices | None = None


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _services
    # Threads such as the live server must not keep connections open past the test database's teardown.
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
    _services = DevServices(DEFAULT_VAR_DIR / "test", persist=False)
    _services.__enter__()
    return (yield)


def pytest_unconfigure(config):
    global _services
    if _services is not None:
        _services.stop()
        _services = None
