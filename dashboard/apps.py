from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Sluice"

    def ready(self) -> None:
        from django.conf import settings

        from dashboard import config

        # A mistake in the broker file stops every process at start-up, naming
        # the file, the entry and what is wrong.
        if settings.SLUICE_CONFIG:
            config.load(settings.SLUICE_CONFIG)
