"""Kind-neutral code asks the broker's kind (dashboard.kinds.kind_of) and never tests it.

A test of a broker kind's name (`broker.kind == "kafka"`, `kind="nats"` in a
query, `{% if kafka %}` in a template) belongs in that kind's own package,
dashboard/kinds/<kind>/, or in a registry.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = "rabbitmq|kafka|nats|redis"
KIND_TEST = re.compile(
    rf"""kind\s*(?:==|!=)\s*["'](?:{NAMES})["']"""  # broker.kind == "kafka"
    rf"""|["'](?:{NAMES})["']\s*(?:==|!=)\s*[\w.]*kind\b"""  # "kafka" == broker.kind
    rf"""|kind\s+(?:not\s+)?in\s+[(\[{{][^)\]}}]*["'](?:{NAMES})["']"""  # kind in ("kafka", ...)
    rf"""|\bkind=["'](?:{NAMES})["']"""  # Broker.objects.filter(kind="nats")
    rf"""|\{{%\s*(?:el)?if\s+(?:not\s+)?(?:{NAMES})\b"""  # {% if kafka %}
)
# Where a kind's name may be tested: its own package, and the registries.
ALLOWED = ("dashboard/kinds/kafka/", "dashboard/kinds/nats/", "dashboard/kinds/rabbitmq/")


def kind_tests(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(ALLOWED):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if KIND_TEST.search(line):
                found.append(f"{rel}:{number}: {line.strip()[:120]}")
    return found


def sources() -> list[Path]:
    code = [p for p in (ROOT / "dashboard").rglob("*.py") if "migrations" not in p.parts]
    templates = [*(ROOT / "templates").rglob("*.html"), *(ROOT / "dashboard").rglob("*.html")]
    return sorted(code + templates)


def test_kind_neutral_code_never_tests_the_broker_kind():
    assert kind_tests(sources()) == []


def test_the_check_finds_each_form_of_kind_test(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    samples = {
        "dashboard/collector.py": 'if broker.kind == "kafka":\n',
        "dashboard/jobservice.py": "if 'nats' != job.broker.kind:\n",
        "dashboard/views/pages.py": 'if broker.kind in ("kafka", "nats"):\n',
        "dashboard/tasks.py": 'Broker.objects.filter(kind="nats")\n',
        "templates/dashboard/x.html": "{% if kafka %}topic{% endif %}\n",
        "dashboard/kinds/kafka/views.py": 'if broker.kind != "kafka":\n',  # its own package
        "dashboard/views/params.py": 'if body_kind == "json":\n',  # not a broker kind
    }
    for name, text in samples.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = kind_tests(sorted(tmp_path.rglob("*.*")))
    assert [line.split(":")[0] for line in found] == [
        "dashboard/collector.py",
        "dashboard/jobservice.py",
        "dashboard/tasks.py",
        "dashboard/views/pages.py",
        "templates/dashboard/x.html",
    ]
