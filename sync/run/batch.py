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

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..choices import ConflictKind, ErrorCategory, PendingAction, SyncStatus
from ..mapping import MappedRecord, payload_for_create, payload_for_update
from ..models import SyncRecord
from ..moodle import errors
from ..moodle.client import MoodleClient
from ..moodle.errors import MoodleError

# Moodle's delete_user() keeps the row but replaces the email with an md5 hash.
_DELETED_EMAIL = re.compile(r"^[0-9a-f]{32}$")


def is_deleted(user: dict[str, Any]) -> bool:
    return bool(user.get("deleted")) or bool(_DELETED_EMAIL.match(str(user.get("email") or "")))


def summary(user: dict[str, Any]) -> dict[str, Any]:
    """What a conflict row keeps of a Moodle user: enough to recognise them, nothing more."""
    keys = ("id", "username", "email", "firstname", "lastname", "idnumber", "auth", "suspended")
    return {key: user.get(key) for key in keys if key in user}


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


class BatchProcessor:
    """Takes one batch of pending records through Moodle; `process` returns a Result per external id."""

    def __init__(
        self,
        client: MoodleClient,
        *,
        match_key: str = "idnumber",
        auth: str = "manual",
        dry_run: bool = False,
    ) -> None:
        self.client = client
        self.match_key = match_key
        self.auth = auth
        self.dry_run = dry_run  # look up and decide, but write nothing

    def process(self, records: list[SyncRecord]) -> dict[str, Result]:
        results: dict[str, Result] = {}
        try:
            self._process(records, results)
        except (MoodleError, errors.BreakerOpen, errors.ThrottleTimeout) as exc:
            raise Interrupted(exc, results) from exc
        return results

    # -- decisions ------------------------------------------------------------------------------

    def _process(self, records: list[SyncRecord], results: dict[str, Result]) -> None:
        upserts = [r for r in records if r.pending_action == PendingAction.UPSERT]
        suspends = [r for r in records if r.pending_action == PendingAction.SUSPEND]
        by_id = self._users_by_id({r.moodle_id for r in records if r.moodle_id})
        matches = self._users_by_match([r for r in upserts if not r.moodle_id])

        targets: dict[str, dict[str, Any] | None] = {}
        for record in upserts:
            if record.moodle_id:
                user = by_id.get(record.moodle_id)
                if user is None or is_deleted(user):
                    results[record.external_id] = Result(
                        SyncStatus.CONFLICT,
                        "update",
                        function="core_user_get_users_by_field",
                        conflict_kind=ConflictKind.LINKED_USER_GONE,
                        their_users=[summary(user)] if user else [],
                        message=f"the linked Moodle user {record.moodle_id} is deleted or missing",
                    )
                    continue
                targets[record.external_id] = user
                continue
            found = [u for u in matches.get(self._match_value(record), []) if not is_deleted(u)]
            if len(found) > 1:
                ids = ", ".join(str(u["id"]) for u in found)
                results[record.external_id] = Result(
                    SyncStatus.CONFLICT,
                    "link",
                    function="core_user_get_users_by_field",
                    conflict_kind=ConflictKind.DUPLICATE_MATCH,
                    their_users=[summary(u) for u in found],
                    message=f"{len(found)} Moodle users match {self.match_key} "
                    f"{self._match_value(record)}: {ids}",
                )
                continue
            targets[record.external_id] = found[0] if found else None

        pending = [r for r in upserts if r.external_id in targets]
        holders_by_username, holders_by_email = self._holders(pending, targets)
        creates: list[SyncRecord] = []
        updates: list[tuple[SyncRecord, dict[str, Any], str]] = []
        for record in pending:
            target = targets[record.external_id]
            if conflict := self._conflict(record, target, holders_by_username, holders_by_email):
                results[record.external_id] = conflict
            elif target is None:
                creates.append(record)
            else:
                change = self._update_for(record, target)
                linked_now = not record.moodle_id
                if change:
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
            user = by_id.get(record.moodle_id)
            if user is None or is_deleted(user) or user.get("suspended"):
                results[record.external_id] = Result(
                    SyncStatus.OK,
                    "suspend",
                    moodle_id=record.moodle_id,
                    suspended_by_hub=True,
                    message="already suspended or gone in Moodle",
                )
            else:
                updates.append((record, {"id": record.moodle_id, "suspended": 1}, "suspend"))

        self._create(creates, results)
        self._update(updates, results)

    def _users_by_id(self, ids: set[int]) -> dict[int, dict[str, Any]]:
        users = self.client.get_users_by_field("id", sorted(ids)) if ids else []
        return {int(u["id"]): u for u in users}

    def _match_value(self, record: SyncRecord) -> str:
        if self.match_key == "idnumber":
            return record.external_id
        return str(record.payload.get(self.match_key, ""))

    def _users_by_match(self, records: list[SyncRecord]) -> dict[str, list[dict[str, Any]]]:
        values = sorted({self._match_value(r) for r in records} - {""})
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for user in self.client.get_users_by_field(self.match_key, values) if values else []:
            grouped[str(user.get(self.match_key, ""))].append(user)
        return grouped

    def _holders(
        self, records: list[SyncRecord], targets: dict[str, dict[str, Any] | None]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """The Moodle users holding the usernames and emails these records are about to take."""
        usernames, emails = set(), set()
        for record in records:
            target = targets[record.external_id] or {}
            username, email = record.payload.get("username", ""), record.payload.get("email", "")
            if username and username != target.get("username"):
                usernames.add(username)
            if email and email.lower() != str(target.get("email", "")).lower():
                emails.add(email)
        by_username = {
            str(u["username"]): u
            for u in (self.client.get_users_by_field("username", sorted(usernames)) if usernames else [])
        }
        by_email: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for user in self.client.get_users_by_field("email", sorted(emails)) if emails else []:
            by_email[str(user.get("email", "")).lower()].append(user)
        return by_username, by_email

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
        if not records:
            return
        if self.dry_run:
            for record in records:
                results[record.external_id] = Result(SyncStatus.OK, "create", message="would create")
            return
        try:
            answers = self.client.create_users([self._create_payload(r) for r in records])
        except MoodleError as error:
            records = self._take_created(records, error.partial or [], results)
            self._write_failed(records, error, results, "core_user_create_users", self._create)
            return
        self._take_created(records, answers, results)

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
                    SyncStatus.OK, "create", moodle_id=moodle_id, function="core_user_create_users"
                )
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
        results[record.external_id] = self._single_failure(record, error, function, action)

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
            their = [summary(u) for u in holders if not is_deleted(u)]
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
