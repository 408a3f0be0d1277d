"""Create the demo accounts `admin` (Admins) and `operator` (Operators), printing their passwords once."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

DEMO_USERS = (("admin", "Admins", True), ("operator", "Operators", False))


class Command(BaseCommand):
    help = "Create the demo users admin and operator (passwords are printed once; --reset makes new ones)."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="give existing demo users new passwords")

    def handle(self, *args, reset: bool = False, **options):
        User = get_user_model()
        for username, group_name, is_staff in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username, defaults={"is_staff": is_staff})
            user.groups.add(Group.objects.get(name=group_name))
            if created or reset:
                password = secrets.token_urlsafe(12)
                user.set_password(password)
                user.save()
                self.stdout.write(f"  {username:<9} password: {password}   ({group_name})")
            else:
                self.stdout.write(
                    f"  {username:<9} exists ({group_name}); its password was printed when it was created "
                    "(python manage.py demousers --reset prints new ones)"
                )
