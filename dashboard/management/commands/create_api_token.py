"""Create (if needed) a user with a role and print a new API token as the last line."""

from django.core.management.base import BaseCommand, CommandError

from dashboard.auth import ROLES, audit, ensure_user
from dashboard.models import ApiToken


class Command(BaseCommand):
    help = "Issue a bearer token for the JSON API. The token is printed once, on the last line."
    # It touches no broker: an unset ${VAR} in the broker file is no reason to fail.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="user name; created if it does not exist")
        parser.add_argument("--role", required=True, choices=ROLES)

    def handle(self, *args, user, role, **options):
        if not user.strip():
            raise CommandError("--user must not be empty")
        account, created = ensure_user(user.strip(), role)
        token, raw = ApiToken.issue(account)
        audit(
            "system",
            "token.create",
            destination=account.get_username(),
            role=role,
            prefix=token.prefix,
        )
        if created:
            self.stdout.write(f"Created user {account.get_username()!r} with role {role}.")
        else:
            self.stdout.write(f"User {account.get_username()!r} now has role {role}.")
        self.stdout.write("Token (shown once, only its hash is stored):")
        self.stdout.write(raw)
