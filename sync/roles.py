"""The roles: who may decide on resolutions (checked by the pages and again by the task that applies
them), and granting permissions to the Operators and Admins groups in the data migrations.

Permissions are normally created after all migrations (post_migrate); they are created here first so a
migration can hand them to the groups in the same `migrate`.
"""

from django.contrib.auth.management import create_permissions
from django.core.exceptions import PermissionDenied

OPERATORS = "Operators"
ADMINS = "Admins"
APPROVE_PERMISSION = "sync.approve_resolution"


def check_may_decide(user, resolution) -> None:
    """Raises PermissionDenied with the reason: only Admins decide, and under the site's four-eyes rule
    not on what they proposed themselves."""
    if user is None or not user.is_active or not user.has_perm(APPROVE_PERMISSION):
        raise PermissionDenied("only Admins approve or reject resolutions")
    if resolution.site.four_eyes and resolution.proposed_by_id == user.pk:
        raise PermissionDenied("four-eyes rule: someone other than the proposer must approve")


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
