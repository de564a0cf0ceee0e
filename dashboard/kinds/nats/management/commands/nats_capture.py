"""Check, and create when allowed, the stream capturing NATS dead-letter advisories."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.auth import audit
from dashboard.kinds.nats import deadletters as nats_deadletters
from dashboard.models import Broker


class Command(BaseCommand):
    help = (
        "Check the advisory capture stream of every NATS broker (or of --broker), creating it "
        "where SLUICE_NATS_CAPTURE_ADVISORIES allows; exits 1 if one does not capture."
    )

    def add_arguments(self, parser):
        parser.add_argument("--broker", help="only this broker")

    def handle(self, *args, broker=None, **options):
        brokers = Broker.objects.filter(kind="nats", enabled=True).order_by("name")
        if broker:
            brokers = brokers.filter(name=broker)
            if not brokers.exists():
                raise CommandError(f"no enabled NATS broker named {broker!r}")
        failed = 0
        for row in brokers:
            status = nats_deadletters.check_capture(row)
            audit("system", "nats.capture.check", broker=row.name,
                  destination=f"stream/{status.stream}", result=status.state)  # fmt: skip
            self.stdout.write(f"{row.name}: {status.state} {status.stream}"
                              + (f": {status.detail}" if status.detail else ""))  # fmt: skip
            if not status.capturing:
                failed += 1
                if status.state != "no-jetstream":
                    self.stdout.write(f"  by hand: {nats_deadletters.how_to_create()}")
        if failed:
            allowed = "on" if settings.SLUICE_NATS_CAPTURE_ADVISORIES else "off"
            raise CommandError(f"{failed} broker(s) do not capture advisories "
                               f"(SLUICE_NATS_CAPTURE_ADVISORIES is {allowed})")  # fmt: skip
