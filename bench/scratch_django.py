"""Django set up on a scratch SQLite database, for benchmarks that run Sluice's own code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_ready = False


def setup(prefix: str = "sluice-bench-") -> None:
    """Configure Django once per process, with a migrated database in a temporary folder."""
    global _ready
    if _ready:
        return
    import django
    from django.core.management import call_command

    state = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    os.environ["SLUICE_STATE_DIR"] = str(state)
    os.environ["DATABASE_URL"] = f"sqlite:///{state / 'sluice.sqlite3'}"
    os.environ.pop("SLUICE_CONFIG", None)
    django.setup()
    call_command("migrate", verbosity=0)
    _ready = True
