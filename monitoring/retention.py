"""Pruning of the hub's high-volume history: the call log and its rollups, probe results, breaker events
and alert deliveries older than HISTORY_RETENTION_DAYS.

Deletes go in batches of a few thousand rows by primary key, each its own short transaction, so a first
prune of months of history never holds a long lock or bloats one transaction; a run stops after its time
budget and the next one goes on. Runs, records, their events, alerts and the audit trail are kept: they
are what people come back to, and they grow with work done, not with every call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from .models import Alert, BreakerEvent, CallLog, CallRollup, Delivery, ProbeResult

BATCH = 5000


@dataclass(frozen=True)
class Pruned:
    rows: dict[str, int]
    finished: bool  # False when the time budget ran out with old rows left

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {name}" for name, n in self.rows.items() if n) or "nothing"
        return f"pruned {counts}" + ("" if self.finished else " (more left for the next run)")


def cutoff(now: datetime | None = None) -> datetime:
    """History older than this is pruned."""
    return (now or timezone.now()) - timedelta(days=settings.HISTORY_RETENTION_DAYS)


def is_pruned(at: datetime | None, now: datetime | None = None) -> bool:
    """Whether the call log of something that happened at `at` may already be gone."""
    return at is not None and at < cutoff(now)


def prune(now: datetime | None = None, *, budget_s: float | None = None, batch: int = BATCH) -> Pruned:
    """Delete what is older than the retention, oldest first, within `budget_s` seconds."""
    before = cutoff(now)
    deadline = time.monotonic() + (settings.HISTORY_PRUNE_BUDGET_S if budget_s is None else budget_s)
    targets = [
        ("calls", CallLog.objects.filter(started_at__lt=before)),
        ("rollups", CallRollup.objects.filter(bucket__lt=before)),
        # A site's last probe and last breaker change stay, however old: the Overview and the breaker
        # rule read them.
        ("probes", ProbeResult.objects.filter(at__lt=before).exclude(pk__in=_latest_per_site(ProbeResult))),
        (
            "breaker events",
            BreakerEvent.objects.filter(at__lt=before).exclude(pk__in=_latest_per_site(BreakerEvent)),
        ),
        # An alert still open keeps its notices: its recovery goes where its firing notice went.
        ("deliveries", Delivery.objects.filter(at__lt=before, alert__status=Alert.Status.RESOLVED)),
    ]
    rows: dict[str, int] = {}
    for name, old in targets:
        rows[name] = 0
        while True:
            deleted = _delete_batch(old, batch)
            rows[name] += deleted
            if deleted < batch:
                break
            if time.monotonic() >= deadline:
                return Pruned(rows, finished=False)
    return Pruned(rows, finished=True)


def _latest_per_site(model: type[models.Model]) -> models.QuerySet:
    return model.objects.order_by("site_id", "-at").distinct("site_id").values("pk")


def _delete_batch(old: models.QuerySet, batch: int) -> int:
    ids = list(old.order_by("pk").values_list("pk", flat=True)[:batch])
    if not ids:
        return 0
    deleted, _ = old.model.objects.filter(pk__in=ids).delete()
    return deleted
