from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Sluice"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib.auth.signals import user_logged_out
        from django.core import checks

        from dashboard import config, loginaudit

        # A mistake in the broker file stops every process at start-up, naming
        # the file, the entry and what is wrong. An unset ${VAR} is a system
        # check instead: commands that touch no broker need not know it.
        if settings.SLUICE_CONFIG:
            config.load(settings.SLUICE_CONFIG, check_variables=False)
        checks.register(config.variables_check)
        loginaudit.connect()
        from dashboard.live import sockets

        # Signing out closes the session's websockets (a tail would stream on otherwise).
        user_logged_out.connect(sockets.end_session_sockets, dispatch_uid="sluice-sockets")
        from dashboard.live import fragments

        fragments.connect()
