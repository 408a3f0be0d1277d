"""Beat schedules per site, kept as django-celery-beat rows so admins edit them in the admin.

Created once when a site is added, never overwritten afterwards: an admin's edit wins.
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
