"""Bring the brokers in the database in line with the file named by SLUICE_CONFIG."""

from django.conf import settings
from django.core.management.base import BaseCommand

from dashboard import config
from dashboard.models import Broker


class Command(BaseCommand):
    help = "Add, update and disable brokers to match SLUICE_CONFIG (the scheduler also does this)."

    def handle(self, *args, **options):
        if not settings.SLUICE_CONFIG:
            self.stdout.write("SLUICE_CONFIG is not set; brokers come from the admin only.")
            return
        config.sync(force=True)
        names = (
            ", ".join(Broker.objects.filter(enabled=True).values_list("name", flat=True)) or "none"
        )
        self.stdout.write(f"Brokers from {settings.SLUICE_CONFIG}: {names}")
