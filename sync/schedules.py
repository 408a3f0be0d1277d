"""Beat schedules per site, kept as django-celery-beat rows so admins edit them in the admin.

Created once when a site is added, never overwritten afterwards: an admin's edit wins. The one exception is
the site's time zone: the nightly run is "02:00 site time", so when the site's zone changes, a nightly
schedule still in the old zone moves with it (one an admin put in another zone stays as it is).
"""

import json

from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from .models import MoodleSite

INCREMENTAL_EVERY_MINUTES = 15
RECONCILE_AT_HOUR = 2  # site time: when the site is quiet


def reconcile_task_name(site: MoodleSite) -> str:
    return f"Nightly reconciliation: {site.slug}"


def incremental_task_name(site: MoodleSite) -> str:
    return f"Incremental sync: {site.slug}"


def ensure_site_schedules(site: MoodleSite) -> None:
    every, _ = IntervalSchedule.objects.get_or_create(
        every=INCREMENTAL_EVERY_MINUTES, period=IntervalSchedule.MINUTES
    )
    PeriodicTask.objects.get_or_create(
        name=incremental_task_name(site),
        defaults={
            "task": "sync.scheduled_sync",
            "interval": every,
            "kwargs": json.dumps({"site_slug": site.slug, "kind": "incremental"}),
            # A run that could not start within its period is replaced by the next one.
            "expire_seconds": INCREMENTAL_EVERY_MINUTES * 60 - 60,
            "description": f"Incremental sync of {site.name}: only new or changed people are sent.",
        },
    )
    nightly, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour=str(RECONCILE_AT_HOUR), day_of_week="*", day_of_month="*", month_of_year="*",
        timezone=site.time_zone,
    )  # fmt: skip
    PeriodicTask.objects.get_or_create(
        name=reconcile_task_name(site),
        defaults={
            "task": "sync.scheduled_sync",
            "crontab": nightly,
            "kwargs": json.dumps({"site_slug": site.slug, "kind": "reconcile"}),
            "expire_seconds": 4 * 3600,
            "description": f"Full diff of {site.name}'s source against Moodle; safe fixes apply.",
        },
    )


def follow_time_zone(site: MoodleSite, old_zone: str) -> bool:
    """Keep the site's nightly reconciliation at its hour in the site's new zone. True if it moved."""
    task = PeriodicTask.objects.filter(name=reconcile_task_name(site)).select_related("crontab").first()
    if task is None or task.crontab is None or str(task.crontab.timezone) != old_zone:
        return False
    old = task.crontab
    moved, _ = CrontabSchedule.objects.get_or_create(
        minute=old.minute, hour=old.hour, day_of_week=old.day_of_week, day_of_month=old.day_of_month,
        month_of_year=old.month_of_year, timezone=site.time_zone,
    )  # fmt: skip
    task.crontab = moved
    task.save(update_fields=["crontab"])
    return True
