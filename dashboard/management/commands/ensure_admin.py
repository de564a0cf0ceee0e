"""Create the first admin if there is none: the password from SLUICE_ADMIN_PASSWORD, or printed once."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from dashboard.auth import ADMIN, audit, set_role


class Command(BaseCommand):
    help = "Create the first admin user unless one exists."
    # It touches no broker: an unset ${VAR} in the broker file is no reason to fail.
    requires_system_checks: list[str] = []

    def handle(self, *args, **options):
        User = get_user_model()
        username = os.environ.get("SLUICE_ADMIN_USER", "admin")
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(f"An admin exists already; sign in as {username!r} or another admin.")
            return
        password = os.environ.get("SLUICE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        set_role(user, ADMIN)
        audit("system", "user.create", destination=username, role=ADMIN)
        if os.environ.get("SLUICE_ADMIN_PASSWORD"):
            self.stdout.write(
                f"Created admin {username!r} with the password from SLUICE_ADMIN_PASSWORD."
            )
        else:
            # Shown this once; only its hash is stored.
            self.stdout.write(f"Created admin {username!r} with password: {password}")
