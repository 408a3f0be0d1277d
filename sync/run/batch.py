"""The second half of a run: one batch of pending records through Moodle.

For a batch: batched look-ups first (linked users by id, unlinked people by the match key, and the holders
of the usernames and emails about to be used), then one decision per person (create, update only the
changed fields, link, suspend, or conflict), then batched writes. Moodle's create call is all-or-nothing,
so a batch that fails as a client fault is split in halves until the bad records are isolated; the others
are written.

Business conflicts cannot be read from Moodle's errors on a production site (the reason is only in
debuginfo), so they are found before writing, from the look-ups.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..choices import ConflictKind, ErrorCategory, PendingAction, SyncStatus
from ..mapping import MappedRecord, payload_for_create, payload_for_update
from ..models import SyncRecord
from ..moodle import errors
from ..moodle.client import MoodleClient
from ..moodle.errors import MoodleError
from ..words import counted
from .sizing import CallSizer
from .view import BlindLookups, LookupProof, LookUps, View, Why, is_deleted, resolve_targets, summary

logger = logging.getLogger(__name__)

CREATE_FUNCTION = "core_user_create_users"
# People sent alone before a refused group is halved: if all are refused the same way, the run stops.
STORM_PROBES = 5
# Fields looked at first when naming what refused people have in common.
TELLING_FIELDS = ("lang", "auth", "suspended", "country", "timezone", "city", "department", "institution")


def common_value(refused: list[SyncRecord], accepted: list[dict[str, Any]]) -> tuple[str, Any] | None:
    """A field and value every refused person shares and nobody Moodle accepted has: the likely cause."""
    if not refused:
        return None
    first = refused[0].payload
    fields = [f for f in TELLING_FIELDS if f in first] + sorted(set(first) - set(TELLING_FIELDS))
    for name in fields:
        value = first.get(name)
        if name in ("username", "email", "idnumber", "firstname", "lastname", "customfields"):
            continue
        if all(r.payload.get(name) == value for r in refused) and not any(
            a.get(name) == value for a in accepted
        ):
            return name, value
    return None


@dataclass
class Result:
    """What happened to one record in this batch."""

    status: str  # ok, error or conflict
    action: str  # create, update, suspend, link, unchanged
    moodle_id: int | None = None
    function: str = ""
    category: str = ""
    message: str = ""
    conflict_kind: str = ""
    their_users: list[dict[str, Any]] | None = None
    dead_letter: dict[str, Any] | None = None
    suspended_by_hub: bool | None = None


class Interrupted(Exception):
    """The batch could not finish: the run must stop (auth, config) or pause (breaker, maintenance). The
    results gathered before it are kept and committed."""

    def __init__(self, cause: Exception, results: dict[str, Result]) -> None:
        self.cause = cause
        self.results = results
        super().__init__(str(cause))


class StormStop(Exception):
    """Moodle refused every person sent alone, the same way: sending the rest one by one would only hammer
    it. `common` names what the refused people share (a field and its value), if anything."""

    def __init__(self, errorcode: str, refused: list[SyncRecord], common: tuple[str, Any] | None) -> None:
        self.errorcode = errorcode
        self.refused = refused
        self.common = common
        super().__init__(
            f"{counted(len(refused), 'person', 'people')} sent alone "
            f"{'was' if len(refused) == 1 else 'were all'} refused ({errorcode})"
        )


class BatchProcessor:
    """Takes one batch of pending records through Moodle; `process` returns a Result per external id.

    One processor lasts a run: it keeps what the run learnt (Moodle's time per user, people refused
    alone) from batch to batch. While a batch's creates are at Moodle, the next batch's look-ups go out
    beside them (`upcoming`); that view is brought up to date with what this batch wrote before the next
    batch decides anything from it."""

    def __init__(
        self,
        client: MoodleClient,
        *,
        match_key: str = "idnumber",
        auth: str = "manual",
        dry_run: bool = False,
        create_suspended: bool = False,
        target_call_ms: float = 2000.0,
        proof: LookupProof | None = None,
    ) -> None:
        self.client = client
        self.match_key = match_key
        self.auth = auth
        self.dry_run = dry_run  # look up and decide, but write nothing
        self.create_suspended = create_suspended
        self.lookups = LookUps(client, match_key, self._match_value, proof)
        self.sizer = CallSizer(client.limits.max_input_vars, target_call_ms, client.limits.max_concurrent)
        self.lone_refusals: list[tuple[SyncRecord, str]] = []  # people refused alone, with the errorcode
        self.lone_success = False
        self.created_payloads: list[dict[str, Any]] = []  # a sample of what Moodle accepted, for StormStop
        self.ahead: View | None = None  # the next batch's view, looked up beside this batch's creates
        self._upcoming: list[SyncRecord] = []
        self._written: list[dict[str, Any]] = []  # users this batch created or changed, as Moodle has them
        self._before: dict[int, dict[str, Any]] = {}  # the users this batch updates, as they were

    def process(
        self, records: list[SyncRecord], upcoming: list[SyncRecord] | None = None
    ) -> dict[str, Result]:
        """One batch; `upcoming` is the batch expected next, whose look-ups may go out meanwhile."""
        results: dict[str, Result] = {}
        self._upcoming = list(upcoming or [])
        self._written, self._before = [], {}
        self._stop: MoodleError | None = None  # a refusal that stops the run, seen beside the creates
        try:
            view = self._view_for(records)
            self._process(records, view, results)
        except BlindLookups as exc:
            self.ahead = None
            raise Interrupted(exc, {}) from exc  # nothing decided from blind answers may be kept
        except (MoodleError, errors.BreakerOpen, errors.ThrottleTimeout, StormStop) as exc:
            self.ahead = None  # the run waits or stops: by the time it goes on, that view is old
            raise Interrupted(exc, results) from exc
        if self.ahead is not None:
            self.ahead.overlay(self._written)
        return results

    def _view_for(self, records: list[SyncRecord]) -> View:
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead.external_ids == frozenset(r.external_id for r in records):
            return ahead
        return self.lookups.view(records)

    def _look_ahead(self) -> None:
        """The next batch's look-ups, made while this batch's creates are at Moodle. A failure here costs
        nothing: the next batch looks up for itself."""
        if not self._upcoming:
            return
        try:
            self.ahead = self.lookups.view(self._upcoming)
        except (errors.SeamError, BlindLookups) as exc:
            self.ahead = None
            if isinstance(exc, MoodleError) and exc.stops_run:
                self._stop = exc  # the token was refused: this batch stops too, once its creates are settled
            else:
                logger.info("look-ups ahead of the next batch failed; it will look up for itself: %s", exc)

    # -- decisions ------------------------------------------------------------------------------

    def _process(self, records: list[SyncRecord], view: View, results: dict[str, Result]) -> None:
        upserts = [r for r in records if r.pending_action == PendingAction.UPSERT]
        suspends = [r for r in records if r.pending_action == PendingAction.SUSPEND]
        targets, held = resolve_targets(upserts, view, self._match_value)
        by_external_id = {r.external_id: r for r in upserts}
        for external_id, why in held.items():
            results[external_id] = self._held_result(by_external_id[external_id], why)

        pending = [r for r in upserts if r.external_id in targets]
        creates: list[SyncRecord] = []
        updates: list[tuple[SyncRecord, dict[str, Any], str]] = []
        for record in pending:
            target = targets[record.external_id] or self._own_account(record, view)
            if conflict := self._conflict(record, target, view.by_username, view.by_email):
                results[record.external_id] = conflict
            elif target is None:
                creates.append(record)
            else:
                change = self._update_for(record, target)
                linked_now = not record.moodle_id
                if change:
                    self._before[int(target["id"])] = target
                    updates.append((record, change, "link" if linked_now else "update"))
                else:
                    results[record.external_id] = Result(
                        SyncStatus.OK,
                        "unchanged",
                        moodle_id=int(target["id"]),
                        message=f"linked to Moodle user {target['id']}, already in step"
                        if linked_now
                        else "",
                    )
        creates = self._drop_batch_duplicates(creates, results)

        for record in suspends:
            user = view.by_id.get(record.moodle_id)
            if user is None or is_deleted(user) or user.get("suspended"):
                results[record.external_id] = Result(
                    SyncStatus.OK,
                    "suspend",
                    moodle_id=record.moodle_id,
                    suspended_by_hub=True,
                    message="already suspended or gone in Moodle",
                )
            else:
                self._before[int(user["id"])] = user
                updates.append((record, {"id": record.moodle_id, "suspended": 1}, "suspend"))

        if creates or updates:
            self.lookups.prove_before_writing()
        self._create(creates, results)
        self._update(updates, results)

    @staticmethod
    def _own_account(record: SyncRecord, view: View) -> dict[str, Any] | None:
        """The Moodle user holding this person's username or email under their own idnumber is theirs (made
        by an earlier try whose answer was lost, or matched on another key): never a conflict with itself."""
        holders = [
            view.by_username.get(record.payload.get("username", "")),
            *view.by_email.get(str(record.payload.get("email", "")).lower(), []),
        ]
        return next(
            (
                u
                for u in holders
                if u and not is_deleted(u) and str(u.get("idnumber") or "") == record.external_id
            ),
            None,
        )

    def _held_result(self, record: SyncRecord, why: Why) -> Result:
        if why.kind == "gone":
            return Result(
                SyncStatus.CONFLICT,
                "update",
                function="core_user_get_users_by_field",
                conflict_kind=ConflictKind.LINKED_USER_GONE,
                their_users=[summary(u) for u in why.users],
                message=f"the linked Moodle user {record.moodle_id} is deleted or missing",
            )
        ids = ", ".join(str(u["id"]) for u in why.users)
        return Result(
            SyncStatus.CONFLICT,
            "link",
            function="core_user_get_users_by_field",
            conflict_kind=ConflictKind.DUPLICATE_MATCH,
            their_users=[summary(u) for u in why.users],
            message=f"{len(why.users)} Moodle users match {self.match_key} "
            f"{self._match_value(record)}: {ids}",
        )

    def _match_value(self, record: SyncRecord) -> str:
        if self.match_key == "idnumber":
            return record.external_id
        return str(record.payload.get(self.match_key, ""))

    def _conflict(
        self,
        record: SyncRecord,
        target: dict[str, Any] | None,
        by_username: dict[str, dict[str, Any]],
        by_email: dict[str, list[dict[str, Any]]],
    ) -> Result | None:
        target_id = int(target["id"]) if target else None
        username = record.payload.get("username", "")
        holder = by_username.get(username)
        if holder and int(holder["id"]) != target_id and not is_deleted(holder):
            return Result(
                SyncStatus.CONFLICT,
                "create" if target is None else "update",
                function="core_user_get_users_by_field",
                conflict_kind=ConflictKind.USERNAME_TAKEN,
                their_users=[summary(holder)],
                message=f"username {username} already belongs to Moodle user {holder['id']}, "
                "not linked to this person",
            )
        email = str(record.payload.get("email", "")).lower()
        others = [u for u in by_email.get(email, []) if int(u["id"]) != target_id and not is_deleted(u)]
        if others:
            ids = ", ".join(str(u["id"]) for u in others)
            return Result(
                SyncStatus.CONFLICT,
                "create" if target is None else "update",
                function="core_user_get_users_by_field",
                conflict_kind=ConflictKind.EMAIL_TAKEN,
                their_users=[summary(u) for u in others],
                message=f"email {record.payload.get('email')} already belongs to Moodle user {ids}, "
                "not linked to this person",
            )
        return None

    def _update_for(self, record: SyncRecord, user: dict[str, Any]) -> dict[str, Any]:
        change = payload_for_update(MappedRecord.staged(record), user)
        if str(user.get("idnumber") or "") != record.external_id:
            change["idnumber"] = record.external_id  # the hub keeps idnumber = external id, unique per site
        if record.suspended_by_hub and user.get("suspended"):
            change["suspended"] = 0  # back in the source after the hub suspended them
        if set(change) - {"id"}:
            change["id"] = int(user["id"])
            return change
        return {}

    def _drop_batch_duplicates(
        self, creates: list[SyncRecord], results: dict[str, Result]
    ) -> list[SyncRecord]:
        """Two new people with one username or email would fail the whole create call; keep the first."""
        first_by_key: dict[tuple[str, str], str] = {}
        kept = []
        for record in creates:
            keys = [
                ("username", record.payload.get("username", "")),
                ("email", str(record.payload.get("email", "")).lower()),
            ]
            clash = next((first_by_key[k] for k in keys if k[1] and k in first_by_key), None)
            if clash:
                results[record.external_id] = Result(
                    SyncStatus.ERROR,
                    "create",
                    category=ErrorCategory.VALIDATION,
                    message=f"record {record.external_id}: same username or email as record {clash} in the "
                    "source; only one of them can have it in Moodle",
                )
                continue
            for key in keys:
                first_by_key.setdefault(key, record.external_id)
            kept.append(record)
        return kept

    # -- writes ---------------------------------------------------------------------------------

    def _create_payload(self, record: SyncRecord) -> dict[str, Any]:
        payload = payload_for_create(MappedRecord.staged(record))
        payload["idnumber"] = record.external_id
        payload.setdefault("auth", self.auth)
        if payload["auth"] == "manual" and "password" not in payload:
            payload["createpassword"] = 1  # Moodle mails a password; the hub never stores one
        return payload

    def _create(self, records: list[SyncRecord], results: dict[str, Result]) -> None:
        """New people: those the source says have left are not created (unless the mapping says to create
        them suspended); the rest go in groups sized for the site, side by side."""
        records = self._hold_leavers(records, results)
        if not records:
            return
        if self.dry_run:
            for record in records:
                then = " and suspend" if record.payload.get("suspended") == 1 else ""
                results[record.external_id] = Result(SyncStatus.OK, "create", message=f"would create{then}")
            return
        groups = self.sizer.groups(records, self._create_payload(records[0]))
        started = time.monotonic()
        payloads = [[self._create_payload(r) for r in group] for group in groups]
        answers = self.client.create_users_side_by_side(payloads, meanwhile=self._look_ahead)
        side_by_side = min(len(groups), self.sizer.concurrency)
        self.sizer.observe(len(records), (time.monotonic() - started) * 1000, side_by_side)
        stop: errors.SeamError | None = None
        lost: list[tuple[list[SyncRecord], MoodleError]] = []
        for group, answer in zip(groups, answers, strict=True):
            if not isinstance(answer, errors.SeamError):
                self._take_created(group, answer, results)
                continue
            left = self._take_created(group, answer.partial or [], results)
            if isinstance(answer, MoodleError) and answer.stops_run:
                self._stop = self._stop or answer
            elif isinstance(answer, MoodleError) and answer.ambiguous:
                lost.append((left, answer))  # looked up once every answer of the round is taken
            elif not isinstance(answer, MoodleError) or answer.category == errors.MAINTENANCE:
                stop = stop or answer  # the whole run waits: what is left stays pending
            elif answer.category in (errors.CLIENT_FAULT, errors.CONFLICT) and len(left) > 1:
                self._isolate_refused(left, results)
            else:
                self._write_failed(left, answer, results, CREATE_FUNCTION, self._create_group)
        stop = self._stop or stop  # a refused token outranks a wait (and explains any call not sent)
        if stop is not None:
            raise stop  # people of a lost answer stay pending: the next look-up by idnumber finds them
        for left, error in lost:
            self._settle_lost_answer(left, error, results)
        self._suspend_after_create(records, results)

    def _hold_leavers(self, records: list[SyncRecord], results: dict[str, Result]) -> list[SyncRecord]:
        """Someone who left before they ever had an account is not created: there is nothing to suspend."""
        if self.create_suspended:
            return records
        kept = []
        for record in records:
            if record.payload.get("suspended") == 1:
                results[record.external_id] = Result(
                    SyncStatus.OK,
                    "not_created",
                    message="not created: the source says this person has left (suspended)",
                )
            else:
                kept.append(record)
        return kept

    def _suspend_after_create(self, records: list[SyncRecord], results: dict[str, Result]) -> None:
        """Created people the source calls suspended: Moodle's create cannot suspend, an update does."""
        items = [
            (record, {"id": results[record.external_id].moodle_id, "suspended": 1}, "create")
            for record in records
            if record.payload.get("suspended") == 1
            and record.external_id in results
            and results[record.external_id].status == SyncStatus.OK
            and results[record.external_id].moodle_id
        ]
        self._update(items, results)

    def _create_group(
        self, records: list[SyncRecord], results: dict[str, Result], *, resent: bool = False
    ) -> None:
        """One create call; a refusal is isolated by halves (the old, patient way)."""
        if not records:
            return
        try:
            answers = self.client.create_users([self._create_payload(r) for r in records])
        except MoodleError as error:
            records = self._take_created(records, error.partial or [], results)
            if error.ambiguous and not resent:
                self._settle_lost_answer(records, error, results)
                return
            self._write_failed(records, error, results, CREATE_FUNCTION, self._create_group)
            return
        self._take_created(records, answers, results)

    def _settle_lost_answer(self, records: list[SyncRecord], error: MoodleError, results) -> None:
        """A create whose answer was lost: Moodle may have made some or all of these people. Sent again
        blind, the call would be refused as a duplicate and split down to single people, each then in
        "conflict" with their own new account. So look first: those Moodle holds under their username with
        their idnumber were created and are linked; only the rest are sent again, once. If that answer is
        lost too, they wait as dead letters (retrying them looks them up first, like any run)."""
        if not records:
            return
        found = self.client.get_users_by_field("username", [r.payload.get("username", "") for r in records])
        by_username = {str(u.get("username")): u for u in found if not is_deleted(u)}
        made = [
            {"id": user["id"], "username": user["username"]}
            for record in records
            if (user := by_username.get(record.payload.get("username", "")))
            and str(user.get("idnumber") or "") == record.external_id
        ]
        left = self._take_created(records, made, results)
        logger.info(
            "%s: answer lost; %d of %d people were created, %d sent again",
            error.function,
            len(made),
            len(records),
            len(left),
        )
        self._create_group(left, results, resent=True)

    def _isolate_refused(self, records: list[SyncRecord], results: dict[str, Result]) -> None:
        """A group Moodle refused as a whole: send the first few people alone before halving the rest. If
        every one of them is refused the same way, it is not one bad person but the data or the site
        (a lang the site lacks, a field create does not take): stop instead of trying each one."""
        while records and not self.lone_success and len(self.lone_refusals) < STORM_PROBES:
            first, records = records[0], records[1:]
            self._create_group([first], results)
        if records:
            self._create_group(records, results)

    def _note_lone_outcome(self, record: SyncRecord, result: Result, error: MoodleError | None) -> None:
        """Bookkeeping of people sent alone, for the storm check."""
        if error is None or result.status != SyncStatus.ERROR:
            self.lone_success = True
            return
        self.lone_refusals.append((record, error.errorcode or error.category))
        codes = {code for _, code in self.lone_refusals}
        if not self.lone_success and len(self.lone_refusals) >= STORM_PROBES and len(codes) == 1:
            refused = [r for r, _ in self.lone_refusals]
            raise StormStop(codes.pop(), refused, common_value(refused, self.created_payloads))

    def _take_created(
        self, records: list[SyncRecord], answers: list[dict[str, Any]], results
    ) -> list[SyncRecord]:
        """Record the users Moodle created; return the records it did not."""
        ids = {str(a.get("username")): int(a["id"]) for a in answers if "id" in a}
        left = []
        for record in records:
            moodle_id = ids.get(record.payload.get("username", ""))
            if moodle_id is None:
                left.append(record)
            else:
                results[record.external_id] = Result(
                    SyncStatus.OK, "create", moodle_id=moodle_id, function=CREATE_FUNCTION
                )
                self._written.append({**record.payload, "idnumber": record.external_id, "id": moodle_id})
                if len(self.created_payloads) < 200:
                    self.created_payloads.append(record.payload)
        if len(records) == 1 and not left:
            self.lone_success = True
        return left

    def _update(
        self, items: list[tuple[SyncRecord, dict[str, Any], str]], results: dict[str, Result]
    ) -> None:
        if not items:
            return
        if self.dry_run:
            for record, change, action in items:
                fields = ", ".join(sorted(set(change) - {"id"}))
                results[record.external_id] = Result(
                    SyncStatus.OK, action, message=f"would {action}: {fields}"
                )
            return
        function = "core_user_update_users"
        try:
            outcome = self.client.update_users([change for _, change, _ in items])
        except MoodleError as error:
            # Updates are idempotent: parts of a split call that went through are simply sent again.
            self._write_failed(items, error, results, function, self._update)
            return
        failures = {f.itemid: f for f in outcome.failures}
        for record, change, action in items:
            moodle_id = int(change["id"])
            failure = failures.get(moodle_id)
            if failure is None:
                results[record.external_id] = Result(
                    SyncStatus.OK,
                    action,
                    moodle_id=moodle_id,
                    function=function,
                    suspended_by_hub=True if action == "suspend" else None,
                )
                self._written.append({**self._before.get(moodle_id, {}), **change})
                continue
            text = f"{failure.warningcode}: {failure.message}"
            kind = {"useremailduplicate": ConflictKind.EMAIL_TAKEN}.get(failure.warningcode, "")
            if (
                not kind
                and failure.warningcode == "dmlwriteexception"
                and "username" in failure.message.lower()
            ):
                kind = ConflictKind.USERNAME_TAKEN
            results[record.external_id] = Result(
                SyncStatus.CONFLICT if kind else SyncStatus.ERROR,
                action,
                moodle_id=moodle_id,
                function=function,
                category="" if kind else ErrorCategory.CLIENT_FAULT,
                conflict_kind=kind,
                their_users=[],
                message=f"Moodle did not update user {moodle_id}: {text}",
            )

    def _write_failed(
        self,
        items: list,
        error: MoodleError,
        results: dict[str, Result],
        function: str,
        retry: Callable[[list, dict[str, Result]], None],
    ) -> None:
        """A write call failed: stop, dead-letter, isolate by halves, or settle one record."""
        if not items:
            return
        if error.stops_run or error.category == errors.MAINTENANCE:
            raise error
        if error.category == errors.TRANSIENT:
            for item in items:
                record, payload = (item, None) if isinstance(item, SyncRecord) else (item[0], item[1])
                results[record.external_id] = self._dead_letter(record, error, function, payload)
            return
        if len(items) > 1:
            middle = len(items) // 2
            retry(items[:middle], results)
            retry(items[middle:], results)
            return
        item = items[0]
        record = item if isinstance(item, SyncRecord) else item[0]
        action = "create" if isinstance(item, SyncRecord) else item[2]
        result = self._single_failure(record, error, function, action)
        results[record.external_id] = result
        if action == "create":
            self._note_lone_outcome(record, result, error)

    def _dead_letter(
        self, record: SyncRecord, error: MoodleError, function: str, payload: dict[str, Any] | None
    ) -> Result:
        return Result(
            SyncStatus.ERROR,
            "create" if payload is None else "update",
            moodle_id=record.moodle_id,
            function=function,
            category=error.category,
            message=str(error),
            dead_letter={
                "function": function,
                "payload": payload if payload is not None else self._create_payload(record),
                "category": error.category,
                "errorcode": error.errorcode or "",
                "http_status": error.http_status,
                "message": str(error),
            },
        )

    def _single_failure(self, record: SyncRecord, error: MoodleError, function: str, action: str) -> Result:
        """One record Moodle refuses on its own. A conflict, when debuginfo or a case-insensitive email
        look-up shows one; otherwise bad data, with Moodle's message."""
        kind = ""
        their: list[dict[str, Any]] = []
        if error.category == errors.CONFLICT:
            text = f"{error.message} {error.debuginfo or ''}".lower()
            kind = ConflictKind.EMAIL_TAKEN if "email" in text else ConflictKind.USERNAME_TAKEN
        elif action == "create" and error.errorcode == "invalidparameter" and record.payload.get("email"):
            # Exact email look-ups miss Alice@X.org vs alice@x.org, yet Moodle's duplicate check ignores
            # case: one listing call tells a conflict from bad data.
            holders = self.client.get_users({"email": record.payload["email"]})["users"]
            holders = [u for u in holders if not is_deleted(u)]
            own = [u for u in holders if str(u.get("idnumber") or "") == record.external_id]
            if own:  # made by an earlier try whose answer was lost: this person, not a conflict
                moodle_id = int(own[0]["id"])
                self._written.append({**record.payload, "idnumber": record.external_id, "id": moodle_id})
                return Result(
                    SyncStatus.OK,
                    "create",
                    moodle_id=moodle_id,
                    function=function,
                    message=f"already created in Moodle as user {moodle_id} (an earlier answer was lost)",
                )
            their = [summary(u) for u in holders]
            if their:
                kind = ConflictKind.EMAIL_TAKEN
        if kind:
            return Result(
                SyncStatus.CONFLICT,
                action,
                moodle_id=record.moodle_id,
                function=function,
                conflict_kind=kind,
                their_users=their,
                message=f"Moodle refused record {record.external_id}: "
                + ("email already in use" if kind == ConflictKind.EMAIL_TAKEN else "username already in use")
                + (f" by user {', '.join(str(u['id']) for u in their)}" if their else ""),
            )
        return Result(
            SyncStatus.ERROR,
            action,
            moodle_id=record.moodle_id,
            function=function,
            category=error.category,
            message=f"Moodle refused record {record.external_id}: {error}",
        )
