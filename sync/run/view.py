"""What Moodle holds for one batch: the answers of its look-ups, in one place.

A batch needs three or four look-ups (linked users by id, unlinked people by the match key, the holders of
the usernames and emails about to be used). They can be made ahead, beside the previous batch's writes, so
that Moodle's spare connection is used while the hub would otherwise wait; such a view is then brought up
to date with what that previous batch wrote (`overlay`), so the decisions are the ones fresh look-ups
would give.

Look-ups are believed only once the token has shown it can see users (`LookupProof`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..choices import PendingAction
from ..models import SyncRecord
from ..moodle.client import BLIND_LOOKUPS, WITNESS_ID, WITNESS_USERNAME, MoodleClient, shows_witness

# Moodle's delete_user() keeps the row but replaces the email with an md5 hash.
_DELETED_EMAIL = re.compile(r"^[0-9a-f]{32}$")


def is_deleted(user: dict[str, Any]) -> bool:
    return bool(user.get("deleted")) or bool(_DELETED_EMAIL.match(str(user.get("email") or "")))


def summary(user: dict[str, Any]) -> dict[str, Any]:
    """What a conflict row keeps of a Moodle user: enough to recognise them, nothing more."""
    keys = ("id", "username", "email", "firstname", "lastname", "idnumber", "auth", "suspended")
    return {key: user.get(key) for key in keys if key in user}


class BlindLookups(Exception):
    """The guest user came back from a look-up without its username, email or name (or not at all): this
    token's look-ups of other users are silently empty or partial, so none of its answers may be believed."""

    def __init__(self) -> None:
        super().__init__(BLIND_LOOKUPS)


@dataclass
class LookupProof:
    """Look-ups are believed only once the token has shown it can see other users: a token without the
    capabilities gets [] (or users without username or email) instead of an error. Moodle's guest user
    proves it (client.WITNESS_ID): it rides along in the run's first look-up by id or by username and
    must come back whole, so the proof costs no call of its own and no answer is believed before it."""

    proven: bool = False

    def observe(self, users: list[dict[str, Any]], *, asked_for_witness: bool) -> None:
        if self.proven or not asked_for_witness:
            return
        if not shows_witness(users):
            raise BlindLookups
        self.proven = True


@dataclass
class Why:
    """Why a record cannot go on to a decision: its linked user is gone, or several users match it."""

    kind: str  # "gone" or "duplicate"
    users: list[dict[str, Any]]


@dataclass
class View:
    """The look-ups' answers for one batch, with what was asked (so an overlay adds only what a fresh
    look-up would have found)."""

    external_ids: frozenset[str]
    match_key: str
    by_id: dict[int, dict[str, Any]] = field(default_factory=dict)
    matches: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    by_username: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_email: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    asked_ids: set[int] = field(default_factory=set)
    asked_matches: set[str] = field(default_factory=set)
    asked_usernames: set[str] = field(default_factory=set)
    asked_emails: set[str] = field(default_factory=set)  # lowercased

    def overlay(self, written: list[dict[str, Any]]) -> None:
        """Users the previous batch created or changed, as Moodle holds them now: they replace whatever
        this view's look-ups saw of them (which may be from before or after the write)."""
        merged: dict[int, dict[str, Any]] = {}
        for user in written:  # a user created then suspended by an update is written twice
            merged[int(user["id"])] = {**merged.get(int(user["id"]), {}), **user}
        ids = set(merged)
        if not ids:
            return
        written = list(merged.values())
        self.by_id = {key: user for key, user in self.by_id.items() if key not in ids}
        self.by_username = {key: user for key, user in self.by_username.items() if int(user["id"]) not in ids}
        for grouped in (self.matches, self.by_email):
            for key in list(grouped):
                grouped[key] = [user for user in grouped[key] if int(user["id"]) not in ids]
        for user in written:
            if int(user["id"]) in self.asked_ids:
                self.by_id[int(user["id"])] = user
            value = str(user.get(self.match_key) or "")
            if value and (value.lower() if self.match_key == "email" else value) in self.asked_matches:
                self.matches[value].append(user)
            if str(user.get("username") or "") in self.asked_usernames:
                self.by_username[str(user["username"])] = user
            email = str(user.get("email") or "").lower()
            if email and email in self.asked_emails:
                self.by_email[email].append(user)


class LookUps:
    """Makes a batch's look-ups and the view they give."""

    def __init__(
        self,
        client: MoodleClient,
        match_key: str,
        match_value: Callable[[SyncRecord], str],
        proof: LookupProof | None,
    ) -> None:
        self.client = client
        self.match_key = match_key
        self.match_value = match_value
        self.proof = proof  # None: the pre-flight already proved the look-ups

    def view(self, records: list[SyncRecord]) -> View:
        view = View(frozenset(r.external_id for r in records), self.match_key)
        upserts = [r for r in records if r.pending_action == PendingAction.UPSERT]
        self._by_id(view, {r.moodle_id for r in records if r.moodle_id})
        self._by_match(view, [r for r in upserts if not r.moodle_id])
        targets, _ = resolve_targets(upserts, view, self.match_value)
        self._holders(view, [r for r in upserts if r.external_id in targets], targets)
        return view

    def prove_before_writing(self) -> None:
        """No look-up carried the proof yet (none acted on an absence): make it before the first write."""
        if self.proof is not None and not self.proof.proven:
            found = self.client.get_users_by_field("id", [WITNESS_ID])
            self.proof.observe(found, asked_for_witness=True)

    def _carries_proof(self) -> bool:
        return self.proof is not None and not self.proof.proven

    def _by_id(self, view: View, ids: set[int]) -> None:
        if not ids:
            return
        carries = self._carries_proof()
        asked = ids | {WITNESS_ID} if carries else ids
        users = self.client.get_users_by_field("id", sorted(asked))
        if self.proof:
            self.proof.observe(users, asked_for_witness=carries)
        view.asked_ids = set(ids)
        view.by_id = {int(u["id"]): u for u in users if int(u["id"]) in ids}

    def _by_match(self, view: View, records: list[SyncRecord]) -> None:
        values = sorted({self.match_value(r) for r in records} - {""})
        found = self.client.get_users_by_field(self.match_key, values) if values else []
        view.asked_matches = {v.lower() if self.match_key == "email" else v for v in values}
        for user in found:
            view.matches[str(user.get(self.match_key, ""))].append(user)

    def _holders(
        self, view: View, records: list[SyncRecord], targets: dict[str, dict[str, Any] | None]
    ) -> None:
        """The Moodle users holding the usernames and emails these records are about to take."""
        usernames, emails = set(), set()
        for record in records:
            target = targets[record.external_id] or {}
            username, email = record.payload.get("username", ""), record.payload.get("email", "")
            if username and username != target.get("username"):
                usernames.add(username)
            if email and email.lower() != str(target.get("email", "")).lower():
                emails.add(email)
        carries = self._carries_proof() and bool(usernames or emails)
        asked = usernames | {WITNESS_USERNAME} if carries else usernames
        found = self.client.get_users_by_field("username", sorted(asked)) if asked else []
        if self.proof:
            self.proof.observe(found, asked_for_witness=carries)
        view.asked_usernames = set(usernames)
        # The guest is a real holder of its username: a source person who wants it cannot have it.
        view.by_username = {str(u["username"]): u for u in found}
        view.asked_emails = {e.lower() for e in emails}
        for user in self.client.get_users_by_field("email", sorted(emails)) if emails else []:
            view.by_email[str(user.get("email", "")).lower()].append(user)


def resolve_targets(
    upserts: list[SyncRecord], view: View, match_value: Callable[[SyncRecord], str]
) -> tuple[dict[str, dict[str, Any] | None], dict[str, Why]]:
    """Each record's Moodle user (None: nobody yet, a create), or why it cannot go on."""
    targets: dict[str, dict[str, Any] | None] = {}
    held: dict[str, Why] = {}
    for record in upserts:
        if record.moodle_id:
            user = view.by_id.get(record.moodle_id)
            if user is None or is_deleted(user):
                held[record.external_id] = Why("gone", [user] if user else [])
            else:
                targets[record.external_id] = user
            continue
        found = [u for u in view.matches.get(match_value(record), []) if not is_deleted(u)]
        if len(found) > 1:
            held[record.external_id] = Why("duplicate", found)
        else:
            targets[record.external_id] = found[0] if found else None
    return targets, held
