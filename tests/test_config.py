"""The broker file: what it accepts, and the clear errors that stop start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dashboard import config
from dashboard.models import Broker

GOOD = """
[[broker]]
name = "rabbit-prod"
kind = "rabbitmq"
management_url = "http://127.0.0.1:15672"
amqp_url = "amqp://ops:${SLUICE_TEST_PW}@127.0.0.1:5672/%2F"
interval = 5

[[broker]]
name = "kafka-prod"
kind = "kafka"
bootstrap_servers = "127.0.0.1:9092"

[[broker]]
name = "nats-prod"
kind = "nats"
url = "nats://127.0.0.1:4222"
monitoring_url = "http://127.0.0.1:8222"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluice.toml"
    path.write_text(text)
    return path


def test_reads_the_documented_example(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_PW", "s3cret")
    entries = config.load(write(tmp_path, GOOD))
    assert [(e.name, e.kind, e.interval) for e in entries] == [
        ("rabbit-prod", "rabbitmq", 5),
        ("kafka-prod", "kafka", None),
        ("nats-prod", "nats", None),
    ]
    # Stored as written; expanded only when connecting.
    assert entries[0].options["amqp_url"] == "amqp://ops:${SLUICE_TEST_PW}@127.0.0.1:5672/%2F"
    assert (
        config.expand_options(entries[0].options)["amqp_url"]
        == "amqp://ops:s3cret@127.0.0.1:5672/%2F"
    )


@pytest.mark.parametrize(
    "text,entry,message",
    [
        ("[[broker]]\nname = 'x'\nkind = 'rabbitmq'\n", "#1 ('x')", "management_url is required"),
        ("[[broker]]\nname = 'x'\nkind = 'redis'\n", "#1 ('x')", "kind must be one of"),
        (
            "[[broker]]\nname = 'a b'\nkind = 'nats'\nmonitoring_url='http://x'\n",
            "#1",
            "name must be",
        ),
        (
            "[[broker]]\nname = 'x'\nkind = 'kafka'\nbootstrap_servers='h:1'\nport=1\n",
            "#1 ('x')",
            "unknown option 'port'",
        ),
        (
            "[[broker]]\nname = 'x'\nkind = 'kafka'\nbootstrap_servers='h:1'\ninterval=0\n",
            "#1 ('x')",
            "interval must be",
        ),
        (
            "[[broker]]\nname = 'x'\nkind = 'kafka'\nbootstrap_servers='${SLUICE_NOT_SET_ANYWHERE}'\n",
            "#1 ('x')",
            "SLUICE_NOT_SET_ANYWHERE",
        ),
        (
            "[[broker]]\nname='x'\nkind='kafka'\nbootstrap_servers='h:1'\n[[broker]]\nname='x'\nkind='kafka'\nbootstrap_servers='h:2'\n",
            "#2 ('x')",
            "already has this name",
        ),
        ("[[broker]\nname = 'x'", "file", "not valid TOML"),
        ("[brokers]\nname='x'\n", "file", "unknown table"),
    ],
)
def test_mistakes_name_the_file_the_entry_and_the_problem(tmp_path, text, entry, message):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert str(path) in str(err.value)
    assert entry in err.value.entry
    assert message in err.value.message


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


def test_a_bad_file_stops_start_up(tmp_path):
    path = write(tmp_path, "[[broker]]\nname = 'x'\nkind = 'rabbitmq'\n")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={**__import__("os").environ, "SLUICE_CONFIG": str(path)},
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode != 0
    assert f"{path}: [[broker]] #1 ('x'): management_url is required for rabbitmq" in result.stderr


@pytest.mark.django_db
def test_sync_adds_updates_and_disables(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_PW", "pw")
    path = write(tmp_path, GOOD)
    assert config.sync(path, force=True)
    assert set(Broker.objects.values_list("name", flat=True)) == {
        "rabbit-prod",
        "kafka-prod",
        "nats-prod",
    }
    assert not config.sync(path)  # unchanged file: not read again
    path.write_text(GOOD.split('[[broker]]\nname = "kafka-prod"')[0])
    config.sync(path, force=True)
    assert set(Broker.objects.filter(enabled=True).values_list("name", flat=True)) == {
        "rabbit-prod"
    }
    # Admin-made brokers are not the file's to remove.
    Broker.objects.create(name="by-hand", kind="nats", options={"monitoring_url": "http://x"})
    config.sync(path, force=True)
    assert Broker.objects.get(name="by-hand").enabled


@pytest.mark.django_db
def test_a_file_broken_while_running_keeps_the_last_good_brokers(
    tmp_path, monkeypatch, caplog, settings
):
    from dashboard import tasks

    monkeypatch.setenv("SLUICE_TEST_PW", "pw")
    path = write(tmp_path, GOOD)
    settings.SLUICE_CONFIG = str(path)
    config.sync(force=True)
    path.write_text("[[broker]]\nname = 'x'\n")
    import os

    os.utime(path, (1, 1))  # a different mtime, as an edit would leave
    tasks.tick.run()
    assert "kind must be one of" in caplog.text
    assert set(Broker.objects.filter(enabled=True).values_list("name", flat=True)) == {
        "rabbit-prod",
        "kafka-prod",
        "nats-prod",
    }


def test_create_api_token_works_without_the_variables_of_the_broker_file(tmp_path):
    """It touches no broker; what does (migrate, check, the web server) still names the gap."""
    import os

    path = write(
        tmp_path,
        "[[broker]]\nname = 'r'\nkind = 'rabbitmq'\nmanagement_url = 'http://127.0.0.1:1'\n"
        "password = '${SLUICE_TEST_UNSET_PW}'\n",
    )
    env = {
        **os.environ,
        "SLUICE_CONFIG": str(path),
        "SLUICE_STATE_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    env.pop("SLUICE_TEST_UNSET_PW", None)

    def manage(*args: str, **more: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            env={**env, **more},
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )

    migrated = manage("migrate", "--noinput", SLUICE_TEST_UNSET_PW="only-for-migrate")
    assert migrated.returncode == 0, migrated.stderr
    made = manage("create_api_token", "--user", "ci-bot", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    assert "Created user 'ci-bot'" in made.stdout and len(made.stdout.splitlines()[-1]) > 30
    checked = manage("check")
    assert checked.returncode != 0
    assert f"{path}: [[broker]] #1 ('r'): option 'password' uses ${{SLUICE_TEST_UNSET_PW}}" in (
        checked.stderr
    )


@pytest.mark.django_db
@pytest.mark.parametrize("options", ["a string", [1, 2], {"management_url": 5}])
def test_a_stored_broker_whose_options_cannot_be_read_is_shown_not_a_500(client_for, options):
    """Rows the admin form refuses now, as a hand or an older version could have stored them."""
    import json

    from dashboard.collection import collector

    broker = Broker.objects.create(name="odd", kind="rabbitmq", options=options)
    alice = client_for("alice")
    for url in ("/", "/brokers/odd/", "/api/v1/brokers", f"/admin/dashboard/broker/{broker.pk}/"):
        assert alice.get(url, follow=True).status_code == 200, url
    assert not collector.collect(broker)
    broker.refresh_from_db()
    assert broker.status == "down"
    assert "not a JSON object" in broker.error or "must be text" in broker.error

    alice.defaults["HTTP_X_CSRFTOKEN"] = alice.cookies["csrftoken"].value
    fields = {"name": "odd", "kind": "rabbitmq", "enabled": "on"}
    again = alice.post(
        f"/admin/dashboard/broker/{broker.pk}/change/", {**fields, "options": json.dumps(options)}
    )
    assert again.status_code == 200 and "errornote" in again.content.decode()
    assert Broker.objects.get(pk=broker.pk).options == options
