"""Run a sync of one site from the shell, in this process (or queued for a worker with --async)."""

import json

from django.core.management.base import BaseCommand, CommandError

from sync import runs
from sync.choices import RunKind, RunStatus
from sync.models import MoodleSite, SyncRun
from sync.run import engine


def summary(run: SyncRun) -> dict:
    duration = run.duration.total_seconds() if run.duration else 0.0
    data = {"run_id": run.pk, "status": run.status, "kind": run.kind, "dry_run": run.dry_run}
    data.update({name: getattr(run, name) for name in SyncRun.COUNTERS})
    data.update(
        progress_done=run.progress_done, progress_total=run.progress_total, duration_s=round(duration, 2)
    )
    if run.abort_reason:
        data["reason"] = run.abort_reason
    if run.dry_run:
        data["plan"] = run.plan
    return data


PLAN_LINES = (
    "seen", "would_create", "would_update", "would_suspend", "already_in_step", "conflicts", "invalid",
    "skipped", "removal_blocked",
)  # fmt: skip


class Command(BaseCommand):
    help = "Sync one site's people to Moodle: --mode bootstrap sends everyone, incremental only what changed."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--mode", choices=[RunKind.BOOTSTRAP, RunKind.INCREMENTAL], default=RunKind.INCREMENTAL
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="look up and plan; write nothing to Moodle"
        )
        parser.add_argument("--json", action="store_true", help="print the run summary as one JSON object")
        parser.add_argument(
            "--async", dest="queue", action="store_true", help="queue it for a worker and return"
        )

    def handle(self, *args, slug: str, mode: str, dry_run: bool, json: bool, queue: bool, **options):
        site = MoodleSite.objects.filter(slug=slug).first()
        if site is None:
            raise CommandError(f"no site {slug}")
        if not hasattr(site, "source"):
            raise CommandError(f"site {slug} has no source yet; add one with addsource")
        run = runs.start(site, mode, dry_run=dry_run, enqueue=queue)
        if queue:
            run.refresh_from_db()
            note = f"Queued run #{run.pk}; follow it on the Runs page."
            if run.sent_at is None:
                note = (
                    f"Queued run #{run.pk}, but the task queue (Redis) did not answer: the run is sent as "
                    "soon as it does (the watchdog tries every 30 s)."
                )
            self._print(summary(run), json, note)
            return
        run = engine.execute(run.pk)
        self._print(summary(run), json, None)
        if run.status == RunStatus.PROBLEMS:
            # Finished, but with work left for a person: not a failure of the command, not a clean sync.
            self.stderr.write(f"run #{run.pk} finished with problems: {run.abort_reason}")
        elif run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"run #{run.pk} {run.status}: {run.abort_reason}")

    def _print(self, data: dict, as_json: bool, note: str | None) -> None:
        if as_json:
            self.stdout.write(json.dumps(data, ensure_ascii=False))
            return
        if note:
            self.stdout.write(note)
            return
        self.stdout.write(f"Run #{data['run_id']} {data['kind']}: {data['status']} in {data['duration_s']} s")
        if data.get("reason"):
            self.stdout.write(f"  reason: {data['reason']}")
        if data["dry_run"]:
            plan = data["plan"]
            for key in PLAN_LINES:
                self.stdout.write(f"  {key.replace('_', ' ')}: {plan.get(key, 0)}")
            estimate = plan.get("estimate", {})
            self.stdout.write(
                f"  estimate: {estimate.get('calls')} calls, about {estimate.get('minutes')} min"
            )
            for kind, examples in plan.get("examples", {}).items():
                self.stdout.write(f"  first {kind}:")
                for example in examples:
                    self.stdout.write(f"    - {example}")
            return
        counters = ", ".join(f"{name} {data[name]}" for name in SyncRun.COUNTERS)
        self.stdout.write(f"  {counters}")
