"""Permissions for the sync engine's pages: operators see runs, records, conflicts and dead letters, and
may retry or discard dead letters; admins also manage sources and read the alerts and call logs."""

from django.db import migrations

from sync.roles import ADMINS, OPERATORS, grant_permissions

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
    grant_permissions(apps, {OPERATORS: OPERATOR_PERMISSIONS, ADMINS: ADMIN_PERMISSIONS})


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0003_sync_engine"),
        ("sync", "0002_roles"),
        ("monitoring", "0003_calls_breaker_alerts"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
