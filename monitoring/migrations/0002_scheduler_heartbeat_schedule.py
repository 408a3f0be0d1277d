"""Schedule the scheduler's heartbeat every minute, as a database entry that admins can edit."""

from django.db import migrations

TASK_NAME = "Scheduler heartbeat"


def add_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "monitoring.record_scheduler_heartbeat",
            "interval": every_minute,
            # A heartbeat that could not run within its minute is worthless later: let it expire.
            "expire_seconds": 50,
            "description": "Dead-man switch: a worker records when this finished; /healthz reads it.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
