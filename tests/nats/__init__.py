"""NATS-specific tests against the real broker; fixtures are in tests/nats_fixtures.py."""
