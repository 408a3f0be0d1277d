#!/usr/bin/env python
"""Django's command line for Integration Hub.

Help needs no configuration: `manage.py`, `manage.py help [COMMAND]` and `manage.py COMMAND --help` print
the full text with no environment variable set, so it can be read before there is a database or a key (a
fresh checkout, an image build). Only those command lines, which print and exit, get placeholder values,
in this process alone; any other command reads the real environment and refuses to start without it
(ImproperlyConfigured, naming the variable).
"""

import base64
import os
import sys

# The values integration_hub/settings.py requires (its _required() calls); a test keeps the two in step.
REQUIRED_SETTINGS = ("SECRET_KEY", "ALLOWED_HOSTS", "TOKEN_ENCRYPTION_KEYS", "DATABASE_URL", "REDIS_URL")
HELP_FLAGS = ("-h", "--help")


def asks_only_for_help(argv: list[str]) -> bool:
    """Whether the command line can only print help: no command, `help ...`, or a help flag among the
    options (argparse prints the help and exits before the command runs). A `--help` after `--` is an
    argument passed on, not a request for help."""
    args = argv[1:]
    if not args or args[0] == "help" or args[0] in HELP_FLAGS:
        return True
    options = args[: args.index("--")] if "--" in args else args
    return any(arg in HELP_FLAGS for arg in options[1:])


def use_help_placeholders() -> None:
    """Placeholders for the required values, which nothing uses: help connects to no database or Redis
    and decrypts no token. Real values are replaced too, so a malformed one cannot break the help."""
    placeholders = {
        "SECRET_KEY": "placeholder-for-help-only-" + base64.urlsafe_b64encode(os.urandom(24)).decode(),
        "ALLOWED_HOSTS": "localhost",
        "TOKEN_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),  # a fresh Fernet key
        "DATABASE_URL": "sqlite://:memory:",
        "REDIS_URL": "redis://placeholder.invalid:6379/0",
    }
    for name in REQUIRED_SETTINGS:
        os.environ.pop(f"{name}_FILE", None)
        os.environ[name] = placeholders[name]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")
    if asks_only_for_help(sys.argv):
        use_help_placeholders()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
