"""Nightly reconciliation: the whole source against Moodle's users, into Discrepancy rows.

Incremental runs only send what changed in the source, so drift accumulates in Moodle: missed events,
errors nobody retried, people created or edited by hand. Reconciliation reads everything again:

- source people, chunk by chunk, with batched look-ups of their linked users (by id) and of the users
  holding their match key (by idnumber, by default);
- Moodle's listing of the users in the site's scope (`core_user_get_users` by auth method), to find the
  orphans. Moodle filters that listing silently by the token user's rights, so an empty or suspiciously
  small listing stops the run instead of proposing to suspend nobody — or everybody.

Each difference becomes a Discrepancy with a proposed resolution. The kinds the site applies automatically
(by default drift, missing users and unsuspensions, all towards the source) are staged as pending records
and sent by the engine's batch loop in the same run; the rest wait for an admin's approval. Destructive
proposals beyond the site's blast-radius limit are blocked and raise an alert.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from monitoring.alerts import raise_alert, resolve_alert
from monitoring.kinds import AlertKind, blast_radius_key

from .. import guard
from ..bulk import insert_rows, update_rows
from ..choices import (
    DiscrepancyKind,
    DiscrepancyStatus,
    ResolutionAction,
    ResolutionStatus,
    RunStatus,
    SyncStatus,
)
from ..mapping import MappedRecord, RecordProblem, payload_for_update
from ..models import Discrepancy, Resolution, RunEvent, SyncRecord, SyncRun
from ..words import counted
from .context import RunStopped
from .planning import STAGED_FIELDS, chunked, mark_pending
from .view import is_deleted, summary

if TYPE_CHECKING:
    from ..moodle.client import MoodleClient
    from .context import RunContext

# Below this share of the users the hub has linked, a listing is taken as filtered by missing rights.
MIN_LISTING_SHARE = 0.5
# Above this many linked users the listing is fetched in slices (by the first character of the email),
# so no single answer holds the whole site.
SLICE_LISTING_ABOVE = 10_000
EMAIL_SLICES = "abcdefghijklmnopqrstuvwxyz0123456789"
# Moodle's guest and main admin accounts are never anyone's orphan.
RESERVED_USER_IDS = {1, 2}
DESTRUCTIVE = {ResolutionAction.SUSPEND}


def _values(user: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {name: user.get(name) for name in fields}


def applied_by_policy(run: SyncRun, discrepancy: Discrepancy, ok: bool, failure: str, now) -> Resolution:
    """The trail of a discrepancy the site's policy applied without approval (its status set to match)."""
    discrepancy.status = DiscrepancyStatus.APPLIED if ok else DiscrepancyStatus.FAILED
    return Resolution(
        site=run.site,
        discrepancy=discrepancy,
        action=discrepancy.proposed_action,
        status=ResolutionStatus.APPLIED if ok else ResolutionStatus.FAILED,
        automatic=True,
        run=run,
        decided_at=now,
        applied_at=now if ok else None,
        outcome="applied by the site's policy" if ok else failure,
    )


class Reconciler:
    """A phase of a run of kind reconcile: the run (its RunContext) holds the site's lock and the client."""

    def __init__(self, executor: RunContext, client: MoodleClient, service_user_id: int | None) -> None:
        self.executor = executor
        self.client = client
        self.run: SyncRun = executor.run
        self.site = executor.site
        self.mapping = self.site.mapping()  # what the source's people are compared through
        self.service_user_id = service_user_id
        self.present_user_ids: set[int] = set()
        self.seen: set[str] = set()
        self.counts: dict[str, int] = defaultdict(int)

    def reconcile(self) -> None:
        waiting = Discrepancy.objects.filter(site=self.site, status__in=DiscrepancyStatus.waiting())
        Resolution.objects.filter(discrepancy__in=waiting, status=ResolutionStatus.PROPOSED).update(
            status=ResolutionStatus.REJECTED, note="superseded by a later reconciliation"
        )
        waiting.update(status=DiscrepancyStatus.SUPERSEDED)
        source, self.mapping = self.executor.source_and_mapping()
        known = SyncRecord.objects.filter(site=self.site).count()
        SyncRun.objects.filter(pk=self.run.pk).update(progress_total=known)
        for chunk in chunked(source.records(), self.site.batch_size):
            self.executor.check_control()
            self._compare_chunk(chunk)
        self._find_orphans()
        self._guard_blast_radius()
        self.executor.event(self._describe())
        self.apply_automatic()

    # -- the source side --------------------------------------------------------------------------

    def _compare_chunk(self, chunk) -> None:
        mapped: list[MappedRecord] = []
        for source_record in chunk:
            result = self.mapping.apply(source_record)
            if isinstance(result, RecordProblem) or result.external_id in self.seen:
                continue  # invalid rows are the sync's to report; reconciliation compares valid people
            self.seen.add(result.external_id)
            mapped.append(result)
        self.compare_people(mapped)
        SyncRun.objects.filter(pk=self.run.pk).update(seen=len(self.seen), progress_done=len(self.seen))

    def compare_people(self, mapped: list[MappedRecord]) -> None:
        """Compare these people (as the source gives them) with what Moodle holds; record the discrepancies
        and stage what the policy applies by itself (sent by `apply_automatic`)."""
        records = {
            r.external_id: r
            for r in SyncRecord.objects.filter(
                site=self.site, external_id__in=[m.external_id for m in mapped]
            )
        }
        linked_ids = sorted({r.moodle_id for r in records.values() if r.moodle_id})
        by_id = {int(u["id"]): u for u in self._lookup("id", linked_ids)}
        values = sorted({self._match_value(m) for m in mapped} - {""})
        matches: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for user in self._lookup(self.mapping.match_key, values):
            if not is_deleted(user):
                matches[str(user.get(self.mapping.match_key, ""))].append(user)
        found: list[Discrepancy] = []
        stage: list[tuple[SyncRecord | None, MappedRecord]] = []
        for person in mapped:
            record = records.get(person.external_id)
            if record is not None and record.sync_status == SyncStatus.CONFLICT:
                continue  # already an open conflict, resolved through its own page
            candidates = matches.get(self._match_value(person), [])
            discrepancy = self._compare(person, record, by_id, candidates)
            if discrepancy is not None:
                found.append(discrepancy)
                if not discrepancy.needs_approval:
                    stage.append((record, person))
            elif record is None or not record.moodle_id:
                stage.append((record, person))  # exactly one match and nothing differs: link quietly
        with transaction.atomic():
            self.executor.fence()
            self._stage(stage)
            self._attach_records(found, {m.external_id: m for m in mapped})
            Discrepancy.objects.bulk_create(found)

    def _lookup(self, field: str, values: list) -> list[dict[str, Any]]:
        if not values:
            return []
        return self.executor.patiently(lambda: self.client.get_users_by_field(field, values))

    def _match_value(self, person: MappedRecord) -> str:
        if self.mapping.match_key == "idnumber":
            return person.external_id
        return str(person.payload.get(self.mapping.match_key, ""))

    def _compare(
        self,
        person: MappedRecord,
        record: SyncRecord | None,
        by_id: dict[int, dict[str, Any]],
        candidates: list[dict[str, Any]],
    ) -> Discrepancy | None:
        if record is not None and record.moodle_id:
            user = by_id.get(record.moodle_id)
            wrong_person = (
                user is not None
                and self.mapping.match_key == "idnumber"
                and str(user.get("idnumber") or "") not in ("", person.external_id)
            )
            if user is None or is_deleted(user) or wrong_person:
                self.present_user_ids.update(int(c["id"]) for c in candidates)
                state = "is deleted or missing" if user is None or is_deleted(user) else (
                    f"now has idnumber {user.get('idnumber')}"
                )  # fmt: skip
                return self._new(
                    DiscrepancyKind.IDENTITY_MISMATCH,
                    person,
                    record,
                    f"{person.external_id} is linked to Moodle user {record.moodle_id}, who {state}",
                    ResolutionAction.RELINK,
                    moodle_user_id=record.moodle_id,
                    moodle_values=summary(user) if user else {},
                    candidates=[summary(c) for c in candidates],
                )
            self.present_user_ids.add(int(user["id"]))
            return self._differences(person, record, user)
        if len(candidates) > 1:
            self.present_user_ids.update(int(c["id"]) for c in candidates)
            ids = ", ".join(str(c["id"]) for c in candidates)
            return self._new(
                DiscrepancyKind.DUPLICATE_MATCH,
                person,
                record,
                f"{person.external_id} matches {len(candidates)} Moodle users ({ids})",
                ResolutionAction.CHOOSE,
                candidates=[summary(c) for c in candidates],
            )
        if len(candidates) == 1:
            self.present_user_ids.add(int(candidates[0]["id"]))
            return self._differences(person, record, candidates[0])
        if record is not None and record.sync_status == SyncStatus.ERROR:
            return None  # the sync already reports why this person is not in Moodle
        if person.payload.get("suspended") == 1 and not self.mapping.create_suspended:
            return None  # left before they ever had an account: the sync does not create them
        return self._new(
            DiscrepancyKind.MISSING_IN_MOODLE,
            person,
            record,
            f"{person.external_id} ({person.payload.get('username')}) has no Moodle user",
            ResolutionAction.CREATE,
        )

    def _differences(self, person: MappedRecord, record: SyncRecord | None, user: dict) -> Discrepancy | None:
        change = payload_for_update(person, user)
        fields = sorted(set(change) - {"id", "suspended"})
        wants_suspended = change.get("suspended", None)
        if record is not None and record.suspended_by_hub and user.get("suspended"):
            wants_suspended = 0  # back in the source after the hub suspended them
        if wants_suspended is not None and bool(wants_suspended) != bool(user.get("suspended")):
            action = ResolutionAction.SUSPEND if wants_suspended else ResolutionAction.UNSUSPEND
            return self._new(
                DiscrepancyKind.SUSPENDED_MISMATCH,
                person,
                record,
                f"{person.external_id} ({user.get('username')}) is "
                f"{'active' if not user.get('suspended') else 'suspended'} in Moodle, "
                f"{'suspended' if wants_suspended else 'active'} in the source",
                action,
                moodle_user_id=int(user["id"]),
                fields=["suspended", *fields],
                source_values={"suspended": int(wants_suspended), **{f: change[f] for f in fields}},
                moodle_values={"suspended": int(bool(user.get("suspended"))), **_values(user, fields)},
            )
        if not fields:
            return None
        return self._new(
            DiscrepancyKind.FIELD_DRIFT,
            person,
            record,
            f"{person.external_id} ({user.get('username')}): {', '.join(fields)} differ",
            ResolutionAction.UPDATE,
            moodle_user_id=int(user["id"]),
            fields=fields,
            source_values={f: change[f] for f in fields},
            moodle_values=_values(user, fields),
        )

    def _new(self, kind: str, person, record, text: str, action: str, **values) -> Discrepancy:
        needs_approval = action in DESTRUCTIVE or action in (ResolutionAction.RELINK, ResolutionAction.CHOOSE)
        automatic = not needs_approval and kind in self.site.auto_apply_kinds
        self.counts[kind] += 1
        defaults = {"source_values": {k: v for k, v in person.payload.items() if k != "customfields"}}
        defaults.update(values)
        return Discrepancy(
            site=self.site,
            run=self.run,
            record=record,
            kind=kind,
            status=DiscrepancyStatus.AUTO if automatic else DiscrepancyStatus.OPEN,
            external_id=person.external_id if person else "",
            summary=text[:500],
            proposed_action=action,
            needs_approval=not automatic,
            **defaults,
        )

    def _stage(self, items: list[tuple[SyncRecord | None, MappedRecord]]) -> None:
        """Records to be sent by the batch loop: created missing people, drift and unsuspensions."""
        new, changed = [], []
        for record, person in items:
            record = record or SyncRecord(site=self.site, external_id=person.external_id)
            mark_pending(record, person, self.run)
            (changed if record.pk else new).append(record)
        insert_rows(SyncRecord, new)
        update_rows(SyncRecord, changed, STAGED_FIELDS)

    def _attach_records(self, found: list[Discrepancy], people: dict[str, MappedRecord]) -> None:
        """Every source person's discrepancy points at a record. One the hub has never seen gets one, held
        back (status conflict) while its discrepancy waits for an admin."""
        missing = [d.external_id for d in found if d.record is None]
        records = {
            r.external_id: r for r in SyncRecord.objects.filter(site=self.site, external_id__in=missing)
        }
        new = []
        for discrepancy in found:
            if discrepancy.record is not None:
                continue
            record = records.get(discrepancy.external_id)
            if record is None:
                record = SyncRecord(site=self.site, external_id=discrepancy.external_id)
                mark_pending(record, people[discrepancy.external_id], self.run)
                record.sync_status = SyncStatus.CONFLICT
                record.error_category = "conflict"
                record.error_message = f"waiting for an admin: {discrepancy.summary}"
                records[record.external_id] = record
                new.append(record)
            discrepancy.record = record
        SyncRecord.objects.bulk_create(new, batch_size=500)

    # -- the Moodle side --------------------------------------------------------------------------

    def _listing(self) -> list[dict[str, Any]]:
        linked = SyncRecord.objects.filter(site=self.site, moodle_id__isnull=False).count()
        auth = {"key": "auth", "value": self.mapping.auth}
        if linked <= SLICE_LISTING_ABOVE:
            slices = [[auth]]
        else:
            slices = [[auth, {"key": "email", "value": f"{c}%"}] for c in EMAIL_SLICES]
        users: list[dict[str, Any]] = []
        for criteria in slices:
            answer = self.executor.patiently(lambda c=criteria: self.client.get_users(c))
            users.extend(answer["users"])
        if linked and len(users) < MIN_LISTING_SHARE * linked:
            raise RunStopped(
                RunStatus.FAILED,
                f"Moodle listed {counted(len(users), 'user')} with auth {self.mapping.auth}, "
                "but the hub has linked "
                f"{linked}: "
                "the token's user probably lacks the rights to see them (the listing is filtered silently). "
                "No orphan was proposed.",
            )
        return users

    def _find_orphans(self) -> None:
        orphans = []
        for user in self._listing():
            user_id = int(user["id"])
            if (
                user_id in self.present_user_ids
                or user_id in RESERVED_USER_IDS
                or user_id == self.service_user_id
                or is_deleted(user)
                or user.get("suspended")
                or str(user.get("idnumber") or "") in self.seen
            ):
                continue
            self.counts[DiscrepancyKind.ORPHAN_IN_MOODLE] += 1
            orphans.append(
                Discrepancy(
                    site=self.site,
                    run=self.run,
                    kind=DiscrepancyKind.ORPHAN_IN_MOODLE,
                    status=DiscrepancyStatus.OPEN,
                    moodle_user_id=user_id,
                    summary=f"Moodle user {user_id} ({user.get('username')}) is in no source record"[:500],
                    moodle_values=summary(user),
                    proposed_action=ResolutionAction.SUSPEND,
                    needs_approval=True,
                )
            )
        # People who left the source keep their record (and link): show whose account it was.
        records = {
            r.moodle_id: r
            for r in SyncRecord.objects.filter(
                site=self.site, moodle_id__in=[o.moodle_user_id for o in orphans]
            )
        }
        for orphan in orphans:
            orphan.record = records.get(orphan.moodle_user_id)
            orphan.external_id = orphan.record.external_id if orphan.record else ""
        Discrepancy.objects.bulk_create(orphans, batch_size=500)

    def _guard_blast_radius(self) -> None:
        destructive = Discrepancy.objects.filter(
            run=self.run, proposed_action__in=DESTRUCTIVE, status=DiscrepancyStatus.OPEN
        )
        count = destructive.count()
        linked = max(guard.linked_users(self.site), len(self.seen))
        verdict = guard.measure(self.site, count, linked=linked)
        key = blast_radius_key(self.site.slug)
        if verdict.allowed:
            resolve_alert(key)
            return
        destructive.update(status=DiscrepancyStatus.BLOCKED)
        SyncRun.objects.filter(pk=self.run.pk).update(blocked=count)
        first = destructive.model.objects.filter(run=self.run, status=DiscrepancyStatus.BLOCKED).order_by(
            "pk"
        )[:5]
        who = "; ".join(d.summary for d in first)
        message = (
            "The blast-radius guard held back the proposed suspensions: suspending them "
            f"{verdict.sentence()}. "
            f"Nothing was suspended. First of them: {who}. Check the source first (a truncated export?); "
            "if they really left, an admin approves them."
        )
        self.executor.event(
            message,
            RunEvent.Level.ERROR,
            link=reverse("sync:discrepancy_list")
            + "?"
            + urlencode({"site": self.site.slug, "run": self.run.pk, "status": DiscrepancyStatus.BLOCKED}),
            link_label=f"Decide on the {count:,} held-back suspensions",
        )
        raise_alert(
            key,
            kind=AlertKind.BLAST_RADIUS,
            site=self.site,
            run=self.run,
            title=f"{self.site.name}: reconciliation stopped short of suspending {counted(count, 'user')}",
            detail=message,
        )

    def _describe(self) -> str:
        parts = [f"{n} {DiscrepancyKind(kind).label.lower()}" for kind, n in sorted(self.counts.items())]
        return f"Compared {len(self.seen)} source people with Moodle: " + (
            ", ".join(parts) or "no discrepancies"
        )

    # -- applying what the policy allows ----------------------------------------------------------

    def apply_automatic(self) -> None:
        automatic = Discrepancy.objects.filter(run=self.run, status=DiscrepancyStatus.AUTO)
        if not automatic.exists():
            return
        pending = SyncRecord.objects.filter(site=self.site, sync_status=SyncStatus.PENDING).count()
        SyncRun.objects.filter(pk=self.run.pk).update(progress_total=F("progress_done") + pending)
        self.executor.work(self.client)
        now = timezone.now()
        resolutions = []
        for discrepancy in automatic.select_related("record"):
            record = discrepancy.record
            ok = record is not None and record.sync_status == SyncStatus.OK
            failure = f"not applied: {record.error_message if record else 'no record'}"
            resolutions.append(applied_by_policy(self.run, discrepancy, ok, failure, now))
        Discrepancy.objects.bulk_update(
            list({r.discrepancy.pk: r.discrepancy for r in resolutions}.values()), ["status"]
        )
        Resolution.objects.bulk_create(resolutions, batch_size=500)
