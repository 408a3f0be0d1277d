"""Signal receivers of the monitoring app. Each is wrapped so it can never break the save it observes."""

import logging

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from sync.choices import RunStatus, RunTrigger
from sync.models import SyncRun

from .pings import send_ping

logger = logging.getLogger(__name__)


@receiver(post_save, sender=SyncRun, dispatch_uid="monitoring.schedule_ping")
def ping_when_scheduled_run_finishes(
    sender, instance: SyncRun, created: bool, update_fields=None, **kwargs
) -> None:
    try:
        if instance.trigger != RunTrigger.SCHEDULE or instance.status not in RunStatus.terminal():
            return
        if update_fields is not None and "status" not in update_fields:
            return  # a later save of a finished run (counters, notes): it was pinged when it finished
        run_pk = instance.pk
        # After commit, so an outside service never hears "done" about work that was rolled back.
        transaction.on_commit(lambda: _ping(run_pk))
    except Exception:
        logger.exception("could not schedule the ping for run #%s", getattr(instance, "pk", "?"))


def _ping(run_pk: int) -> None:
    run = SyncRun.objects.filter(pk=run_pk).select_related("site").first()
    if run is not None:
        send_ping(run)
