"""Exit 0 when the named parts of the hub are healthy, 1 otherwise (for container health checks)."""

from django.core.management.base import BaseCommand, CommandError

from monitoring.health import CHECKS, run_checks


class Command(BaseCommand):
    help = "Check the hub's parts (database, redis, worker, scheduler) like /healthz; exit 1 if one is down."

    def add_arguments(self, parser):
        parser.add_argument("components", nargs="*", choices=sorted(CHECKS), help="default: all")

    def handle(self, *args, components: list[str], **options):
        healthy, results = run_checks(components or None)
        for component in results:
            state = "ok" if component["ok"] else "DOWN"
            self.stdout.write(f"{component['name']}: {state} ({component['detail']})")
        if not healthy:
            raise CommandError("unhealthy")
