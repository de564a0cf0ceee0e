from django.apps import AppConfig


class RabbitMQConfig(AppConfig):
    """Installed so that Django finds this kind's templates, template tags and commands."""

    name = "dashboard.kinds.rabbitmq"
    label = "sluice_rabbitmq"
    verbose_name = "Sluice: RabbitMQ"
