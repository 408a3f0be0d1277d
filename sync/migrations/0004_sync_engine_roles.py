"""Permissions for the sync engine's pages: operators see runs, records, conflicts and dead letters, and
may retry or discard dead letters; admins also manage sources and read the alerts and call logs."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

OPERATOR_PERMISSIONS = [
    "sync.view_syncsource",
    "sync.view_runevent",
    "sync.view_recordevent",
    "sync.view_conflict",
    "sync.view_deadletter",
    "sync.retry_deadletter",
    "monitoring.view_calllog",
    "monitoring.view_breakerevent",
    "monitoring.view_alert",
    "monitoring.change_alert",
]
ADMIN_PERMISSIONS = OPERATOR_PERMISSIONS + [
    "sync.add_syncsource",
    "sync.change_syncsource",
    "sync.delete_syncsource",
    "sync.change_conflict",
    "sync.change_deadletter",
]


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, names in (("Operators", OPERATOR_PERMISSIONS), ("Admins", ADMIN_PERMISSIONS)):
        group = Group.objects.get(name=group_name)
        for name in names:
            app_label, codename = name.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0003_sync_engine"),
        ("sync", "0002_roles"),
        ("monitoring", "0003_calls_breaker_alerts"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
