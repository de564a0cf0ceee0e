from django.apps import AppConfig


class NatsConfig(AppConfig):
    """Installed so that Django finds this kind's templates, template tags and commands."""

    name = "dashboard.kinds.nats"
    label = "sluice_nats"
    verbose_name = "Sluice: NATS"
