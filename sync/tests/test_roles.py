"""The Operators and Admins groups exist after migrate, with the permissions the pages check."""

import pytest
from django.contrib.auth.models import Group


@pytest.mark.django_db
def test_roles_are_created_with_their_permissions(operator, hub_admin):
    assert set(Group.objects.values_list("name", flat=True)) >= {"Operators", "Admins"}
    assert operator.has_perm("sync.view_syncrun") and operator.has_perm("sync.operate_runs")
    assert not operator.has_perm("sync.add_moodlesite")
    assert not operator.has_perm("sync.manage_tokens")
    assert hub_admin.has_perm("sync.add_moodlesite") and hub_admin.has_perm("sync.manage_tokens")
    assert hub_admin.has_perm("django_celery_beat.change_periodictask")
