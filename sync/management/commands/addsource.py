"""Give a site its source of people and the field mapping (formats: sync/sources/README.md)."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from sync import source_setup
from sync.choices import RemovedPolicy, SourceKind
from sync.mapping import MappingConfigError
from sync.models import MoodleSite
from sync.sources import SourceConfigError, SourceError, open_source

# The flag that gives each key a kind cannot start without (sync.source_setup.missing_keys; the same key can
# come from --config).
FLAGS = {
    "path": "--path FILE",
    "id_column": "--id-column COLUMN",
    "url": "--url URL",
    "dsn_secret": "--dsn-secret VAR",
}


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
        "below) and --mapping FILE.json. A csv source needs --path and --id-column, an sql source "
        "--dsn-secret, --id-column and --table or --query, an http source --url (each may come from --config "
        "instead). The source is opened and its first record mapped as a check."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--kind", choices=SourceKind.values, help='required unless the --config file has "kind"'
        )
        parser.add_argument("--mapping", required=True, metavar="FILE.json", help="mapping JSON file")
        parser.add_argument("--config", metavar="FILE.json", help="source config JSON file (any kind)")
        parser.add_argument("--path", metavar="FILE", help="csv: the file to read")
        parser.add_argument("--url", help="http: the first page's URL")
        parser.add_argument("--table", help="sql: table or view")
        parser.add_argument("--query", metavar="SQL", help="sql: a SELECT instead of a table")
        parser.add_argument(
            "--dsn-secret", metavar="VAR", help="sql: environment variable holding the SQLAlchemy URL"
        )
        parser.add_argument(
            "--id-column",
            metavar="COLUMN",
            help="csv and sql (required): the column with the external id; http: the id field (default: id)",
        )
        parser.add_argument("--removed", choices=RemovedPolicy.values, default=RemovedPolicy.KEEP,
                            help="what happens to people who leave the source (default: keep)")  # fmt: skip

    def handle(self, *args, slug: str, kind: str | None, mapping: str, **options):
        config = _json_file(options["config"], "config") if options["config"] else {}
        if not isinstance(config, dict):
            raise CommandError(f"the config file {options['config']} must hold a JSON object")
        kind = self._kind(kind, config.pop("kind", None), options["config"])
        shortcuts = {
            "path": options["path"], "url": options["url"], "table": options["table"],
            "query": options["query"], "dsn_secret": options["dsn_secret"],
        }  # fmt: skip
        config.update({k: v for k, v in shortcuts.items() if v})
        if options["id_column"]:
            config["id_field" if kind == SourceKind.HTTP else "id_column"] = options["id_column"]
        mapping_config = _json_file(mapping, "mapping")
        try:
            field_mapping = source_setup.check_mapping(mapping_config)
        except MappingConfigError as exc:
            raise CommandError(str(exc)) from None
        for key in source_setup.missing_keys(kind, config):
            if key == source_setup.TABLE_OR_QUERY:
                raise CommandError(
                    "--kind sql needs --table TABLE or --query SQL (or either in the --config file)"
                )
            raise CommandError(f'--kind {kind} needs {FLAGS[key]} (or "{key}" in the --config file)')
        site = MoodleSite.objects.filter(slug=slug).first()
        if site is None:
            raise CommandError(f"no site {slug}; add it first with addsite")
        try:
            source = open_source({"kind": kind, **config})
            first = next(iter(source.records()), None)
        except (SourceConfigError, SourceError) as exc:
            raise CommandError(str(exc)) from None
        source_setup.save_source(  # as the source page saves it: audited
            site, kind, config, None, removed_policy=options["removed"], mapping=mapping_config
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

    @staticmethod
    def _kind(flag: str | None, in_config: object, config_path: str | None) -> str:
        """--kind, or the config file's "kind"; the two must agree when both are given."""
        if in_config is not None and in_config not in SourceKind.values:
            raise CommandError(
                f'the config file {config_path} has "kind": {in_config!r}; '
                f"use one of {', '.join(SourceKind.values)}"
            )
        if flag and in_config and flag != in_config:
            raise CommandError(
                f'--kind {flag} contradicts "kind": "{in_config}" in the config file {config_path}'
            )
        kind = flag or in_config
        if not kind:
            raise CommandError('say the kind of source: --kind csv|http|sql (or "kind" in the --config file)')
        return str(kind)
