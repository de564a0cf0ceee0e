"""RabbitMQ-specific tests against the real broker; fixtures are in tests/rabbit_fixtures.py."""
