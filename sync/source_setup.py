"""Setting up a site and its source: the checks and the saving that the setup pages and the addsite /
addsource commands share, so a site set up either way has passed the same checks.

Every change is saved in one transaction together with its audit entry (and, for a new site, its beat
schedules, made by a signal): a check or a write that fails leaves nothing behind, never a half-made site
that the Overview would then call failing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitoring.models import AuditEntry
from web.models import zone_names

from . import schedules
from .choices import SourceKind
from .mapping import MappedRecord, Mapping, MappingConfigError, RecordProblem
from .models import MoodleSite, SyncSource
from .moodle.client import ENDPOINT
from .run.planning import map_record
from .sources import SourceConfigError, SourceError, open_source
from .sources.base import SourceRecord

logger = logging.getLogger(__name__)

# What each kind of source cannot start without. An SQL source also needs a table or a query (TABLE_OR_QUERY).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    SourceKind.CSV: ("path", "id_column"),
    SourceKind.HTTP: ("url",),
    SourceKind.SQL: ("dsn_secret", "id_column"),
}
TABLE_OR_QUERY = "table"
PREVIEW_RECORDS = 20
# The reachability check runs inside the request that saves the site: a dead host must not hold the page.
PROBE_TIMEOUT_S = 5.0
# An environment variable's name: what a source config may hold instead of a secret.
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Site settings an audit entry lists when they change (the policy's are listed by save_policy).
SITE_FIELDS = (
    "name", "slug", "base_url", "enabled", "time_zone", "languages", "max_concurrent_calls", "min_spacing_ms",
    "calls_per_minute", "batch_size", "max_input_vars", "run_time_budget", "events_expected_within",
)  # fmt: skip
POLICY_FIELDS = (
    "auto_apply_kinds", "four_eyes", "rename_rule", "max_removal_percent", "max_removal_count", "role_ids",
)  # fmt: skip


class SetupError(ValueError):
    """A setting that cannot work, in words; `key` names the config key at fault when it is known."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


# -- sites -------------------------------------------------------------------------------------------------


def check_time_zone(name: str) -> str:
    """The name, if it is an IANA zone this machine knows; schedules and pages use it, so a typo is refused
    here rather than found by the scheduler."""
    if name in zone_names():
        return name
    raise SetupError(f"{name!r} is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)")


def probe_moodle(base_url: str, *, transport: httpx.BaseTransport | None = None) -> str:
    """Whether `base_url` answers as a Moodle site: "" if it does, else a warning in words.

    A call without a token is enough: Moodle's REST endpoint answers it with a JSON error (invalidtoken),
    which no other server sends. It is not a call to a site of the hub (there is no token yet), so it
    bypasses the client seam, its throttle and its audit rows; the token page verifies the real thing."""
    url = base_url.rstrip("/") + ENDPOINT
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT_S, transport=transport, follow_redirects=False) as client:
            response = client.get(
                url, params={"moodlewsrestformat": "json", "wsfunction": "core_webservice_get_site_info"}
            )
    except httpx.TimeoutException:
        return (
            f"{base_url} did not answer within {PROBE_TIMEOUT_S:g} s: check the URL and that the hub may "
            "reach it"
        )
    except httpx.HTTPError as exc:
        return (
            f"{base_url} cannot be reached ({type(exc).__name__}): check the URL, the DNS name and the "
            "firewalls between"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("errorcode" in body or "exception" in body):
        return ""
    status = response.status_code
    if 300 <= status < 400:
        where = response.headers.get("location", "elsewhere")
        return f"{url} redirects (HTTP {status}) to {where}: give the site's own root URL (its wwwroot)"
    if status == 403:
        return (
            f"{url} answered HTTP 403: enable web services and the REST protocol in Moodle "
            "(Site administration > Server > Web services)"
        )
    return (
        f"{url} answered HTTP {status}, but not as Moodle's web service does: check that the URL is the "
        "site's root and that the REST protocol is enabled"
    )


def snapshot(site: MoodleSite, fields: Iterable[str] = SITE_FIELDS) -> dict[str, object]:
    return {name: getattr(site, name) for name in fields}


def changes(before: dict[str, object], site: MoodleSite) -> list[str]:
    """ "time_zone: UTC → Europe/Berlin" for each field whose value differs from `before`."""
    return [
        f"{name}: {_shown(old)} → {_shown(getattr(site, name))}"
        for name, old in before.items()
        if old != getattr(site, name)
    ]


def save_site(site: MoodleSite, user, before: dict[str, object] | None = None) -> MoodleSite:
    """Create (`before` None) or change a site, with its audit entry, in one transaction: a new site's
    schedules are made by a signal inside it, so a failure there leaves no site row behind."""
    check_time_zone(site.time_zone)
    with transaction.atomic():
        site.save()
        if before is None:
            audit(user, "site.add", site, f"{site.name} at {site.base_url}, time zone {site.time_zone}")
        elif diff := changes(before, site):
            old_zone = before.get("time_zone")
            if old_zone and old_zone != site.time_zone and schedules.follow_time_zone(site, str(old_zone)):
                diff.append(f"nightly reconciliation moved to {site.time_zone}")
            audit(user, "site.change", site, "; ".join(diff))
    return site


def audit(user, action: str, site: MoodleSite, detail: str) -> AuditEntry:
    return AuditEntry.objects.create(
        actor=user if getattr(user, "pk", None) else None,
        action=action,
        target=f"site {site.slug}"[:200],
        detail=detail,
    )


# -- sources -----------------------------------------------------------------------------------------------


def missing_keys(kind: str, config: dict) -> list[str]:
    """The keys a source of this kind cannot start without and that `config` lacks; TABLE_OR_QUERY for an
    SQL source with neither a table nor a query."""
    missing = [key for key in REQUIRED_KEYS[kind] if not config.get(key)]
    if kind == SourceKind.SQL and not (config.get("table") or config.get("query")):
        missing.append(TABLE_OR_QUERY)
    return missing


def check_secret_name(name: str) -> str:
    """A secret is named, never given: refuse anything that does not look like an environment variable."""
    if not SECRET_NAME.match(name or ""):
        raise SetupError(
            f"{name!r} is not the name of an environment variable (letters, digits and _, e.g. HR_DB_DSN); "
            "the secret itself is never typed here"
        )
    return name


def secret_is_set(name: str) -> bool:
    """Whether the environment of this process has the variable (its value is never read out here)."""
    return bool(os.environ.get(name))


def read_first(kind: str, config: dict, limit: int = 1, *, file=None) -> list[SourceRecord]:
    """Open the source as a run would and read its first records; SetupError says why it cannot be read.

    `file` is an uploaded CSV not stored yet (read instead of `path`)."""
    if file is not None:
        config = {key: value for key, value in config.items() if key != "path"} | {"file": file}
    try:
        source = open_source({"kind": kind, **config})
        with contextlib.closing(source.records()) as records:
            return list(itertools.islice(records, limit))
    except SourceConfigError as exc:
        raise SetupError(str(exc), _key_named(str(exc))) from None
    except SourceError as exc:
        raise SetupError(str(exc), "id_column" if "id column" in str(exc) else "") from None


def columns_of(records: Iterable[SourceRecord]) -> list[str]:
    """The columns (CSV header names, flattened JSON keys, SQL columns) the records have, in order."""
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record.fields))
    return list(seen)


def check_mapping(config: dict, site: MoodleSite | None = None) -> Mapping:
    """The mapping a run would build (MoodleSite.mapping()), or MappingConfigError naming the key."""
    mapping = Mapping.from_config(config)
    return mapping.for_site(site.language_list) if site is not None else mapping


def kept_upload_folder(site: MoodleSite) -> Path:
    """Where the hub keeps a source's uploaded CSV. One level deeper than the per-run uploads, which
    delete_spent_uploads() deletes after a day: a source's file must stay until another replaces it."""
    return Path(settings.UPLOAD_DIR) / site.slug / "source"


def keep_upload(site: MoodleSite, upload) -> Path:
    folder = kept_upload_folder(site)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(upload.name or "people.csv").stem)[:60] or "people"
    path = folder / f"{stem}-{timezone.now():%Y%m%d-%H%M%S}.csv"
    with path.open("wb") as target:
        for chunk in upload.chunks():
            target.write(chunk)
    return path


def is_kept_upload(site: MoodleSite, path: str) -> bool:
    return bool(path) and Path(path).parent == kept_upload_folder(site)


def save_source(
    site: MoodleSite,
    kind: str,
    config: dict,
    user,
    *,
    removed_policy: str | None = None,
    mapping: dict | None = None,
    upload=None,
) -> SyncSource:
    """Store the site's source settings (checked before: read_first) with an audit entry. An upload is kept
    by the hub and becomes the config's path; the file it replaces is deleted once the change commits.
    The mapping is kept unless one is given (a new source starts with none: the mapping page is next)."""
    config = dict(config)
    new_file = keep_upload(site, upload) if upload is not None else None
    if new_file is not None:
        config["path"] = str(new_file)
    existing = SyncSource.objects.filter(site=site).first()
    old_path = str(existing.config.get("path", "")) if existing is not None else ""
    try:
        with transaction.atomic():
            source = SyncSource.objects.select_for_update().filter(site=site).first()
            created = source is None
            source = source or SyncSource(site=site, mapping={})
            source.kind, source.config = kind, config
            if mapping is not None:
                source.mapping = mapping
            if removed_policy:
                source.removed_policy = removed_policy
            source.save()
            shown = ", ".join(f"{key}={_shown(value)}" for key, value in sorted(config.items()))
            what = f"{kind}: {shown}; people who leave it: {source.removed_policy}"
            if new_file is not None:
                what += f"; uploaded file {upload.name} kept as {new_file.name}"
            audit(user, "source.add" if created else "source.change", site, what)
    except Exception:
        if new_file is not None:
            new_file.unlink(missing_ok=True)
        raise
    if is_kept_upload(site, old_path) and old_path != config.get("path"):
        transaction.on_commit(lambda: Path(old_path).unlink(missing_ok=True))
    return source


def save_mapping(site: MoodleSite, config: dict, user) -> SyncSource:
    """Store a mapping that passed check_mapping, with an audit entry listing each field's origin."""
    mapping = check_mapping(config, site)
    with transaction.atomic():
        source = SyncSource.objects.select_for_update().get(site=site)
        source.mapping = config
        source.save(update_fields=["mapping", "updated_at"])
        described = "; ".join(f"{name} ← {origin}" for name, origin in mapping.describe())
        summary = f"match key {mapping.match_key}, auth {mapping.auth}; {described}"
        audit(user, "mapping.change", site, summary)
    return source


def save_policy(site: MoodleSite, user, before: dict[str, object]) -> MoodleSite:
    with transaction.atomic():
        site.save(update_fields=[*POLICY_FIELDS, "updated_at"])
        if diff := changes(before, site):
            audit(user, "policy.change", site, "; ".join(diff))
    return site


# -- the preview -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewRow:
    """One source record and what a run would make of it: the payload to send, or the problem."""

    record: SourceRecord
    result: MappedRecord | RecordProblem

    @property
    def ok(self) -> bool:
        return isinstance(self.result, MappedRecord)


@dataclass
class Preview:
    rows: list[PreviewRow] = field(default_factory=list)
    error: str = ""  # the source or the mapping cannot be used at all
    fields: list[str] = field(default_factory=list)  # the Moodle fields to show, in mapping order

    @property
    def problems(self) -> int:
        return sum(not row.ok for row in self.rows)


def preview(
    site: MoodleSite, mapping_config: dict, records: list[SourceRecord], source_error: str = ""
) -> Preview:
    """The source's first records (`read_first`, read once by the page; `source_error` when it could not
    be read) mapped and validated by the run's own code: the mapping a run builds (MoodleSite.mapping():
    the site's languages included) applied as the planner applies it (planning.map_record: an external id
    seen twice is refused)."""
    try:
        mapping = check_mapping(mapping_config, site)
    except MappingConfigError as exc:
        return Preview(error=f"The mapping is not complete yet: {exc}")
    if source_error:
        return Preview(error=f"The source cannot be read: {source_error}")
    seen: set[str] = set()
    rows = [PreviewRow(record, map_record(mapping, record, seen)) for record in records]
    shown = [name for name in mapping.fields if name not in ("auth",)]
    return Preview(rows=rows, fields=shown)


def _key_named(message: str) -> str:
    """The config key a source's complaint names ("csv source config: 'delimiter' must be ...")."""
    found = re.search(r"'([a-z_]+)(?:\.[a-z_]+)?'", message)
    return found.group(1) if found else ""


def _shown(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value) if value != "" else '""'
