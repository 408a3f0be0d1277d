"""Permissions for reconciliation: everyone sees discrepancies and resolutions, operators may propose and
comment, only admins approve or reject."""

from django.db import migrations

from sync.roles import ADMINS, OPERATORS, grant_permissions

OPERATOR_PERMISSIONS = [
    "sync.view_discrepancy",
    "sync.view_resolution",
    "sync.add_resolution",
    "sync.view_comment",
    "sync.add_comment",
]
ADMIN_PERMISSIONS = OPERATOR_PERMISSIONS + [
    "sync.approve_resolution",
    "sync.change_resolution",
    "sync.change_discrepancy",
]


def grant(apps, schema_editor):
    grant_permissions(apps, {OPERATORS: OPERATOR_PERMISSIONS, ADMINS: ADMIN_PERMISSIONS})


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0005_reconciliation"),
        ("sync", "0004_sync_engine_roles"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
