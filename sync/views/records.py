"""Pages of the records: search, a person's page (status, source beside Moodle, history, the way out
of a conflict) and the live look-up in Moodle."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from web.csv_export import queryset_csv
from web.pages import list_page

from ..choices import ConflictStatus
from ..forms import RecordFilterForm
from ..lookups import look_up
from ..models import SyncRecord
from .decisions import conflict_choices, same_value
from .memberships import maps_memberships

HISTORY_LIMIT = 200


def record_list(request):
    filters = RecordFilterForm(request.GET)
    rows = (
        filters.filter(SyncRecord.objects.select_related("site", "last_run"))
        .defer("payload", "create_only", "last_run__plan")
        .order_by("-pk")
    )
    return list_page(request, "sync/record_list.html", filters, rows)


EXPORT_COLUMNS = (
    ("site", "site__slug"), ("external_id", "external_id"), ("display_name", "display_name"),
    ("username", "username"), ("email", "email"), ("status", "sync_status"),
    ("error_category", "error_category"), ("error_message", "error_message"), ("moodle_id", "moodle_id"),
    ("last_run", "last_run_id"), ("synced_at", "synced_at"), ("origin", "origin"),
)  # fmt: skip


def record_export(request):
    """The records the list shows with the same search and filters, as a streamed CSV (every page)."""
    records = RecordFilterForm(request.GET).filter(SyncRecord.objects.all())
    return queryset_csv("records", EXPORT_COLUMNS, records.order_by("-pk"))


def record_detail(request, pk: int):
    record = get_object_or_404(_records(), pk=pk)
    return render(request, "sync/record_detail.html", _record_context(record))


@require_POST
@permission_required("sync.operate_runs", raise_exception=True)  # it spends the site's call budget
def record_lookup(request, pk: int):
    """Ask Moodle now for the user behind this record, to compare with what the source says."""
    record = get_object_or_404(_records(), pk=pk)
    found = look_up(record)
    return render(
        request,
        "sync/record_detail.html",
        _record_context(record, looked_up=found.users, lookup_error=found.error, asked=found.asked),
    )


def _records():
    return SyncRecord.objects.select_related("site", "last_run")


def _record_context(record: SyncRecord, *, looked_up=None, lookup_error: str = "", asked: str = "") -> dict:
    conflicts = [
        conflict_choices(c) for c in record.conflicts.filter(status=ConflictStatus.OPEN).select_related("run")
    ]
    letters = list(record.dead_letters.select_related("run", "retry_run").order_by("-last_failed_at")[:20])
    if looked_up is not None:
        theirs, theirs_from = looked_up, f"Moodle now (looked up by {asked})"
    else:
        theirs = _unique_users(user for conflict in conflicts for user in conflict.their_users)
        theirs_from = "Moodle, as recorded with the open conflict" if theirs else ""
    memberships = list(record.memberships.select_related("target").order_by("target__kind", "target__key"))
    return {
        "record": record,
        "site": record.site,
        "memberships": memberships,
        # Only asked when the person has none: "in no course" is news only if the mapping names some.
        "maps_memberships": bool(memberships) or maps_memberships(record.site),
        "history": record.events.select_related("run").defer("run__plan")[:HISTORY_LIMIT],
        "conflicts": conflicts,
        "dead_letters": letters,
        "comparison": _compare(record, theirs),
        "theirs": theirs,
        "theirs_from": theirs_from,
        "looked_up": looked_up is not None,
        "lookup_error": lookup_error,
    }


def _unique_users(users) -> list[dict]:
    seen, unique = set(), []
    for user in users:
        if user.get("id") not in seen:
            seen.add(user.get("id"))
            unique.append(user)
    return unique


_MOODLE_FIELDS = ("id", "username", "email", "firstname", "lastname", "idnumber", "auth", "suspended")


def _flat(user: dict) -> dict:
    """Custom profile fields as profile_field_<shortname>, like the form Moodle's upload tool uses."""
    values = {key: value for key, value in user.items() if key != "customfields"}
    for field in user.get("customfields") or []:
        name = field.get("shortname") or field.get("type")
        if name:
            values[f"profile_field_{name}"] = field.get("value")
    return values


def _compare(record: SyncRecord, users: list[dict]) -> list[dict]:
    """The source's values beside each Moodle user's, field by field, with the differing cells marked."""
    ours = _flat(record.payload or {})
    ours.setdefault("id", record.moodle_id)
    theirs = [_flat(user) for user in users]
    fields = list(dict.fromkeys([*_MOODLE_FIELDS, *ours]))
    fields = [f for f in fields if f in ours or any(f in user for user in theirs)]
    rows = []
    for field in fields:
        cells = []
        for user in theirs:
            known = field in user
            differs = known and field in ours and not same_value(ours.get(field), user.get(field))
            cells.append({"value": user.get(field), "known": known, "differs": differs})
        rows.append({"field": field, "ours": ours.get(field), "has_ours": field in ours, "theirs": cells})
    return rows
