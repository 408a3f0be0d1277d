"""Reconcile one site now: the whole source against Moodle, into discrepancies (see sync/reconcile.py)."""

import json as jsonlib

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from sync import runs
from sync.choices import RunKind
from sync.models import Discrepancy, MoodleSite
from sync.run import engine

from .sync import summary


class Command(BaseCommand):
    help = "Reconcile a site: find drift, missing people and orphans; apply what the site's policy allows."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--json", action="store_true", help="print the result as one JSON object")

    def handle(self, *args, slug: str, json: bool, **options):
        site = MoodleSite.objects.filter(slug=slug).first()
        if site is None or not hasattr(site, "source"):
            raise CommandError(f"no site {slug} with a source")
        run = engine.execute(runs.start(site, RunKind.RECONCILE, enqueue=False).pk)
        rows = Discrepancy.objects.filter(run=run).values("kind", "status").annotate(n=Count("pk"))
        by_kind: dict[str, dict[str, int]] = {}
        for row in rows:
            by_kind.setdefault(row["kind"], {})[row["status"]] = row["n"]
        data = {**summary(run), "discrepancies": by_kind}
        if json:
            self.stdout.write(jsonlib.dumps(data, ensure_ascii=False))
        else:
            reason = f" ({run.abort_reason})" if run.abort_reason else ""
            self.stdout.write(f"Reconciliation run #{run.pk}: {run.status}{reason}")
            if not by_kind:
                self.stdout.write("  no discrepancies: source and Moodle agree")
            for kind, statuses in sorted(by_kind.items()):
                detail = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
                self.stdout.write(f"  {kind}: {sum(statuses.values())} ({detail})")
        if run.status not in ("succeeded", "problems"):
            raise CommandError(f"run #{run.pk} {run.status}")
