"""Give a site its source of people and the field mapping (formats: sync/sources/README.md)."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from sync.choices import RemovedPolicy, SourceKind
from sync.mapping import Mapping, MappingConfigError
from sync.models import MoodleSite, SyncSource
from sync.sources import SourceConfigError, SourceError, open_source


def _json_file(path: str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"the {what} file {path} is not valid JSON: {exc}") from None


class Command(BaseCommand):
    help = (
        "Set the source of a site's people: --kind csv|http|sql with --config FILE.json (or the shortcuts "
        "below) and --mapping FILE.json. The source is opened and its first record mapped as a check."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--kind", required=True, choices=SourceKind.values)
        parser.add_argument("--mapping", required=True, help="mapping JSON file")
        parser.add_argument("--config", help="source config JSON file (any kind)")
        parser.add_argument("--path", help="csv: the file to read")
        parser.add_argument("--url", help="http: the first page's URL")
        parser.add_argument("--table", help="sql: table or view")
        parser.add_argument("--query", help="sql: a SELECT instead of a table")
        parser.add_argument("--dsn-secret", help="sql: environment variable holding the SQLAlchemy URL")
        parser.add_argument(
            "--id-column", help="csv/sql: the column with the external id; http: the id field"
        )
        parser.add_argument("--removed", choices=RemovedPolicy.values, default=RemovedPolicy.KEEP,
                            help="what happens to people who leave the source (default: keep)")  # fmt: skip

    def handle(self, *args, slug: str, kind: str, mapping: str, **options):
        site = MoodleSite.objects.filter(slug=slug).first()
        if site is None:
            raise CommandError(f"no site {slug}; add it first with addsite")
        config = _json_file(options["config"], "config") if options["config"] else {}
        shortcuts = {
            "path": options["path"], "url": options["url"], "table": options["table"],
            "query": options["query"], "dsn_secret": options["dsn_secret"],
        }  # fmt: skip
        config.update({k: v for k, v in shortcuts.items() if v})
        if options["id_column"]:
            config["id_field" if kind == SourceKind.HTTP else "id_column"] = options["id_column"]
        config.pop("kind", None)
        mapping_config = _json_file(mapping, "mapping")
        try:
            field_mapping = Mapping.from_config(mapping_config)
            source = open_source({"kind": kind, **config})
            first = next(iter(source.records()), None)
        except (SourceConfigError, MappingConfigError, SourceError) as exc:
            raise CommandError(str(exc)) from None
        SyncSource.objects.update_or_create(
            site=site,
            defaults={
                "kind": kind,
                "config": config,
                "mapping": mapping_config,
                "removed_policy": options["removed"],
            },
        )
        self.stdout.write(
            f"Source for {slug}: {source.describe()}; people who leave it: {options['removed']}."
        )
        if first is None:
            self.stdout.write("The source is empty right now.")
        else:
            result = field_mapping.apply(first)
            summary = getattr(result, "message", None) or f"maps to username {result.payload.get('username')}"
            self.stdout.write(f"First record ({first.origin}): {first.external_id} {summary}")
        self.stdout.write(f"Next: python manage.py sync {slug} --mode bootstrap --dry-run")
