"""List a site's open dead letters, or retry them."""

from collections import Counter

from django.core.management.base import BaseCommand, CommandError

from sync import runs
from sync.choices import DeadLetterStatus
from sync.models import DeadLetter, MoodleSite
from sync.run import engine

from ...words import counted


class Command(BaseCommand):
    help = "List open dead letters by errorcode and function; --retry --all or --retry ID... resends them."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("ids", nargs="*", type=int, help="dead letter ids to retry")
        parser.add_argument("--retry", action="store_true")
        parser.add_argument(
            "--all", action="store_true", help="with --retry: every open dead letter of the site"
        )
        parser.add_argument(
            "--async", dest="queue", action="store_true", help="queue the retry run for a worker"
        )

    def handle(self, *args, slug: str, ids: list[int], retry: bool, all: bool, queue: bool, **options):
        site = MoodleSite.objects.filter(slug=slug).first()
        if site is None:
            raise CommandError(f"no site {slug}")
        letters = DeadLetter.objects.filter(site=site, status=DeadLetterStatus.OPEN).select_related("record")
        if not retry:
            groups = Counter((d.errorcode or f"HTTP {d.http_status}", d.function) for d in letters)
            if not groups:
                self.stdout.write(
                    "No open dead letters: every write Moodle failed has been retried or discarded."
                )
            for (code, function), count in groups.most_common():
                self.stdout.write(f"{count:6d}  {code:<30} {function}")
            return
        if not all and not ids:
            raise CommandError("say which: --all, or the ids of the dead letters")
        chosen = list(letters if all else letters.filter(pk__in=ids))
        run = runs.retry_dead_letters(site, chosen, enqueue=queue)
        if run is None:
            raise CommandError("none of those dead letters is open")
        if queue:
            self.stdout.write(f"Queued retry run #{run.pk} for {counted(len(chosen), 'dead letter')}.")
            return
        run = engine.execute(run.pk)
        self.stdout.write(
            f"Retry run #{run.pk}: {run.status}; {run.created} created, {run.updated} updated, "
            f"{run.errors} failed again, {run.dead_lettered} dead-lettered again."
        )
