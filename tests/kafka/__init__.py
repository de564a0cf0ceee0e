"""Kafka-specific tests against the real broker; fixtures are in tests/kafka_fixtures.py."""
