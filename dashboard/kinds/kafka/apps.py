from django.apps import AppConfig


class KafkaConfig(AppConfig):
    """Installed so that Django finds this kind's templates, template tags and commands."""

    name = "dashboard.kinds.kafka"
    label = "sluice_kafka"
    verbose_name = "Sluice: Kafka"
