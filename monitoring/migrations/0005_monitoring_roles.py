"""Permissions for monitoring: operators see probes, alerts and deliveries, acknowledge alerts and mute
them; admins also manage alert channels, schedule pings and read the audit trail."""

from django.db import migrations

from sync.roles import ADMINS, OPERATORS, grant_permissions

OPERATOR_PERMISSIONS = [
    "monitoring.view_proberesult",
    "monitoring.view_delivery",
    "monitoring.view_alertmute",
    "monitoring.add_alertmute",
]
ADMIN_PERMISSIONS = OPERATOR_PERMISSIONS + [
    "monitoring.view_alertchannel",
    "monitoring.add_alertchannel",
    "monitoring.change_alertchannel",
    "monitoring.delete_alertchannel",
    "monitoring.view_scheduleping",
    "monitoring.add_scheduleping",
    "monitoring.change_scheduleping",
    "monitoring.delete_scheduleping",
    "monitoring.view_auditentry",
    "monitoring.change_alertmute",
    "monitoring.delete_alertmute",
]


def grant(apps, schema_editor):
    grant_permissions(apps, {OPERATORS: OPERATOR_PERMISSIONS, ADMINS: ADMIN_PERMISSIONS})


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0004_probes_channels_mutes"),
        ("sync", "0006_reconciliation_roles"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
