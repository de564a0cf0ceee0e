"""Sparklines and line charts drawn as inline SVG on the server: no chart library, no JS."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


def _scale(values: list[float], lo: float, hi: float, height: float, pad: float) -> list[float]:
    span = hi - lo or 1.0
    return [pad + (height - 2 * pad) * (1 - (v - lo) / span) for v in values]


def sparkline(values: list[int], width: int = 120, height: int = 24) -> SafeString:
    if len(values) < 2:
        return mark_safe(
            f'<svg class="spark empty" width="{width}" height="{height}" aria-hidden="true"></svg>'
        )
    lo, hi = min(values), max(values)
    step = width / (len(values) - 1)
    ys = _scale([float(v) for v in values], lo, hi, height, 2)
    points = " ".join(f"{i * step:.1f},{y:.1f}" for i, y in enumerate(ys))
    rising = values[-1] > values[0]
    label = f"backlog over the last hour: {lo:,} to {hi:,}, now {values[-1]:,}"
    return mark_safe(
        f'<svg class="spark{" rising" if rising else ""}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
        f'<polyline points="{points}" fill="none" stroke-width="1.5"/></svg>'
    )


def _fmt(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value != int(value):
        return f"{value:.1f}"
    return f"{int(value):,}"


def line_chart(
    series: list[tuple[str, str, list[tuple[int, float | None]]]],
    since: int,
    until: int,
    width: int = 640,
    height: int = 180,
) -> SafeString:
    """Lines of (label, css class, [(ts, value)]) over [since, until], with axes."""
    left, right, top, bottom = 52, 8, 8, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, _, pts in series for _, v in pts if v is not None]
    if not values:
        return mark_safe(
            f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="no data yet">'
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="muted">'
            "No samples in this window yet</text></svg>"
        )
    hi = max(values) * 1.1 or 1.0
    span = max(1, until - since)

    def x(ts: int) -> float:
        return left + plot_w * (ts - since) / span

    def y(v: float) -> float:
        return top + plot_h * (1 - v / hi)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">']
    for frac in (0, 0.5, 1):
        gy = top + plot_h * (1 - frac)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{gy:.1f}" y2="{gy:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end">{_fmt(hi * frac)}</text>'
        )
    for frac in (0, 0.25, 0.5, 0.75, 1):
        ts = since + int(span * frac)
        label = datetime.fromtimestamp(ts, UTC).strftime("%H:%M" if span <= 86400 else "%a %H:%M")
        anchor = "start" if frac == 0 else "end" if frac == 1 else "middle"
        parts.append(
            f'<text class="axis" x="{x(ts):.1f}" y="{height - 6}" text-anchor="{anchor}">{label}</text>'
        )
    for label, css, pts in series:
        # A gap in the samples (the broker was down) is a gap in the line.
        runs: list[list[str]] = [[]]
        for ts, v in pts:
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(ts):.1f},{y(v):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle class="{css}" cx="{cx}" cy="{cy}" r="1.5"/>')
            elif run:
                parts.append(
                    f'<polyline class="{css}" points="{" ".join(run)}"><title>{escape(label)}</title></polyline>'
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))
