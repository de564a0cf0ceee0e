"""Triage: detectors that read a sliding window of each broker's and destination's samples
after every collection, and the incidents they open and resolve.

- `window`: the recent samples a detector judges, loaded once per evaluation;
- `findings`: what a detector reports (`Finding`) and the trends and limits it reasons with;
- `detectors`: the kind-neutral detectors; a kind adds its own (`Kind.detectors`,
  in dashboard/kinds/<kind>/detectors.py);
- `evaluate`: runs them all for one broker and keeps the Incident rows in step;
- `ranking`: the On fire order (urgency), and the rule as the page shows it.

It runs in the Celery workers after each collection, never on the request path.
"""
