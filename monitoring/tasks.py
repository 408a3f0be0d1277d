"""Periodic tasks of the monitoring app. Thin: each calls one function and returns a short summary."""

import socket

from celery import shared_task

from .models import Heartbeat


@shared_task(name="monitoring.record_scheduler_heartbeat", ignore_result=True)
def record_scheduler_heartbeat() -> str:
    beat = Heartbeat.record(Heartbeat.SCHEDULER, detail=f"worker {socket.gethostname()}")
    return f"scheduler heartbeat at {beat.last_finished_at.isoformat()}"
