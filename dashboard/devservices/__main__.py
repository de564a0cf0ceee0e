"""The command line: `python -m dashboard.devservices run | test -- CMD [ARGS...]`.

`make run` and `make test` call it. Whatever it started is stopped when it
ends, however it ends; see the package docstring for what each command does.
"""

from __future__ import annotations

import signal
import sys

from dashboard import devservices
from dashboard.devservices.commands import cmd_run, cmd_test
from dashboard.devservices.process import ServiceError, _running, _say, stop_all


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args[:1] == ["run"]:
            return cmd_run()
        if args[:1] == ["test"]:
            rest = args[1:]
            return cmd_test(rest[1:] if rest[:1] == ["--"] else rest)
        print(devservices.__doc__, file=sys.stderr)
        return 2
    except ServiceError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0 if args[:1] == ["run"] else 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if _running:
            _say("stopping " + ", ".join(p.name for p in reversed(_running)))
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
