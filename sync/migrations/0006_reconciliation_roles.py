"""Permissions for reconciliation: everyone sees discrepancies and resolutions, operators may propose and
comment, only admins approve or reject."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

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
        ("sync", "0005_reconciliation"),
        ("sync", "0004_sync_engine_roles"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
