"""Timing a benchmark's contenders and printing their medians and ratio."""

from __future__ import annotations

import statistics
import time


class Timed:
    """Wall and CPU seconds of this process spent in a `with` block."""

    def __enter__(self) -> Timed:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def report(heading: str, n: int, runs: dict[str, list[Timed]], target: float) -> float:
    """Print medians of "ours" and "reference" for `n` messages, and ours ÷ reference."""
    print(f"\n{heading}")
    print(f"{'':11}{'seconds':>9}{'msg/s':>10}{'CPU µs/msg':>12}")
    wall = {}
    for name, timings in runs.items():
        wall[name] = statistics.median(t.wall for t in timings)
        cpu = statistics.median(t.cpu for t in timings) * 1e6 / n
        print(f"{name:11}{wall[name]:9.2f}{n / wall[name]:10.0f}{cpu:12.0f}")
    ratio = wall["reference"] / wall["ours"]
    verdict = "met" if ratio >= target else "NOT met"
    print(f"ours ÷ reference: {ratio:.2f} (target ≥ {target}: {verdict})")
    return ratio
