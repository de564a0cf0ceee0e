"""The On fire order: severity first, then time to impact, then what is new or worsening."""

from __future__ import annotations

from dashboard.models.incidents import SEVERITY_RANK

RULE = (
    "Most urgent first: critical, then warning, then info. Within a severity, harm due soonest "
    "(full, or records lost, within 10 min, 1 h, 6 h) ranks higher, then trouble that is new "
    "(under 15 min) or worsening, above what has stood unchanged for hours."
)


# (harm due within, seconds: points added)
IMPACT = ((600, 400), (3600, 250), (6 * 3600, 100))


def urgency(
    severity: str, impact_seconds: float | None, age_seconds: float, worsening: bool
) -> int:
    score = SEVERITY_RANK.get(severity, 0) * 1000
    if impact_seconds is not None:
        score += next((bonus for within, bonus in IMPACT if impact_seconds < within), 0)
    if age_seconds < 900:
        score += 200
    elif age_seconds < 3600:
        score += 100
    elif age_seconds > 6 * 3600:
        score -= 100
    if worsening:
        score += 150
    return score
