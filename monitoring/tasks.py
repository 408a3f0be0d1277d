"""Periodic tasks of the monitoring app. Thin: each calls one function and returns a short summary."""

import socket

from celery import shared_task

from sync.words import counted

from . import alerts, heartbeat, retention, rules
from .models import Heartbeat


@shared_task(name="monitoring.record_scheduler_heartbeat", ignore_result=True)
def record_scheduler_heartbeat() -> str:
    beat = Heartbeat.record(Heartbeat.SCHEDULER, detail=f"worker {socket.gethostname()}")
    return f"scheduler heartbeat at {beat.last_finished_at.isoformat()}"


@shared_task(name="monitoring.probe_sites", ignore_result=True)
def probe_sites() -> str:
    return f"probed {counted(heartbeat.probe_sites(), 'site')}"


@shared_task(name="monitoring.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> str:
    """Every minute: run the alert rules, then send the notices that are due (a few steps at most, so a
    storm of notices does not hold the worker for long)."""
    evaluation = rules.evaluate()
    steps = 0
    while steps < 5 and alerts.notify_pending():
        steps += 1
    return f"{evaluation}; {counted(steps, 'notification step')}"


@shared_task(name="monitoring.prune_history", ignore_result=True)
def prune_history() -> str:
    """Every hour: history older than HISTORY_RETENTION_DAYS goes, a bounded amount at a time."""
    return str(retention.prune())
