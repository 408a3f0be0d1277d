"""``python manage.py simulator``: a simulated Moodle web-service endpoint in the foreground."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from simulator.__main__ import add_arguments
from simulator.runner import Options, run


class Command(BaseCommand):
    help = "Serve a simulated Moodle 5.1 REST endpoint (threaded) for demos and tests."
    # The simulator needs neither the database nor the project's checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        add_arguments(parser)

    def handle(self, *args: object, **options: object) -> None:
        names = Options.__dataclass_fields__
        run(Options(**{k: v for k, v in options.items() if k in names}), out=self.stdout)
