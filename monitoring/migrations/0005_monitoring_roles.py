"""Permissions for monitoring: operators see probes, alerts and deliveries, acknowledge alerts and mute
them; admins also manage alert channels, schedule pings and read the audit trail."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

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
        ("monitoring", "0004_probes_channels_mutes"),
        ("sync", "0006_reconciliation_roles"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
