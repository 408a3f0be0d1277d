"""Beat entries for monitoring: alert rules are evaluated and sites probed every minute (each site is
probed only when its last probe is older than PROBE_INTERVAL_S)."""

from django.db import migrations

TASKS = (
    ("Evaluate alert rules", "monitoring.evaluate_alerts", "Checks every alert rule, notifies and recovers."),
    ("Probe Moodle sites", "monitoring.probe_sites", "core_webservice_get_site_info for each site that is due."),
)


def add_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    for name, task, description in TASKS:
        PeriodicTask.objects.get_or_create(
            name=name,
            defaults={"task": task, "interval": every_minute, "expire_seconds": 50, "description": description},
        )


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[t[0] for t in TASKS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0005_monitoring_roles"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add_schedules, remove_schedules)]
