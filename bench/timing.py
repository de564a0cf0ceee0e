"""Timing a benchmark's contenders and printing their medians and ratio."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


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


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and this process's CPU seconds taken by `fn()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(
    runs: dict[str, Callable[[], object]], rounds: int
) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each run, `rounds` times. The runs take turns, so drift
    in the broker's load hits every one alike."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return times


def cycle_table(
    times: dict[str, list[tuple[float, float]]], labels: dict[str, str]
) -> dict[str, float]:
    """Print each run's median, fastest and slowest wall time and median CPU, in ms,
    under `labels` (run name -> row label); return the median walls, in seconds."""
    wall = {name: statistics.median(w for w, _ in v) for name, v in times.items()}
    rounds = len(next(iter(times.values())))
    width = max(30, *(len(label) + 2 for label in labels.values()))
    print(f"\n{'median of ' + str(rounds):{width}}{'wall':>9}{'min':>9}{'max':>9}{'our CPU':>9}")
    for name, label in labels.items():
        w = [x for x, _ in times[name]]
        cpu = statistics.median(c for _, c in times[name])
        print(
            f"{label:{width}}{wall[name] * 1000:>7.0f}ms{min(w) * 1000:>7.0f}ms"
            f"{max(w) * 1000:>7.0f}ms{cpu * 1000:>7.0f}ms"
        )
    return wall
