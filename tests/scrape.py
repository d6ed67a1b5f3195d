"""Reading a `/metrics` exposition the way a Prometheus server does (prometheus_client's
parser), for tests that assert what a scrape shows."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def scraped(text: str, name: str, **labels: str) -> float | None:
    """The value of sample `name` with exactly `labels` in the exposition `text`; None when
    the scrape does not show it."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None
