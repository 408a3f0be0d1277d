"""Granting permissions to the Operators and Admins groups, for the data migrations that define the roles.

Permissions are normally created after all migrations (post_migrate); they are created here first so a
migration can hand them to the groups in the same `migrate`.
"""

from django.contrib.auth.management import create_permissions

OPERATORS = "Operators"
ADMINS = "Admins"


def grant_permissions(apps, permissions: dict[str, list[str]]) -> None:
    """Give each group (created if missing) its "app_label.codename" permissions."""
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, names in permissions.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        for name in names:
            app_label, codename = name.split(".")
            permission = Permission.objects.get(content_type__app_label=app_label, codename=codename)
            group.permissions.add(permission)
