"""Create the Operators and Admins groups with their permissions."""

from django.db import migrations

from sync.roles import ADMINS, OPERATORS, grant_permissions

OPERATOR_PERMISSIONS = [
    "sync.view_moodlesite",
    "sync.view_servicetoken",
    "sync.view_syncrecord",
    "sync.view_syncrun",
    "sync.operate_runs",
    "monitoring.view_heartbeat",
]
ADMIN_PERMISSIONS = OPERATOR_PERMISSIONS + [
    "sync.add_moodlesite",
    "sync.change_moodlesite",
    "sync.delete_moodlesite",
    "sync.add_servicetoken",
    "sync.change_servicetoken",
    "sync.manage_tokens",
    "sync.change_syncrecord",
    "sync.change_syncrun",
    "django_celery_beat.view_periodictask",
    "django_celery_beat.add_periodictask",
    "django_celery_beat.change_periodictask",
    "django_celery_beat.delete_periodictask",
    "django_celery_beat.view_crontabschedule",
    "django_celery_beat.add_crontabschedule",
    "django_celery_beat.change_crontabschedule",
    "django_celery_beat.view_intervalschedule",
    "django_celery_beat.add_intervalschedule",
    "django_celery_beat.change_intervalschedule",
]


def create_roles(apps, schema_editor):
    grant_permissions(apps, {OPERATORS: OPERATOR_PERMISSIONS, ADMINS: ADMIN_PERMISSIONS})


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Operators", "Admins"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0001_initial"),
        ("monitoring", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
