"""Reading a node's Prometheus metrics (strife/observe/metrics.py) as the operator: plain HTTP on
loopback, else TLS with the operator's certificate against the infrastructure authority."""
from __future__ import annotations

import ssl
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from strife.deployment.identities import INFRA, OPERATOR
from strife.deployment.layout import Layout
from strife.observe.metrics import on_loopback

Samples = dict[str, list[tuple[dict[str, str], float]]]  # sample name -> [(labels, value)]


def _context(home) -> ssl.SSLContext:
    layout = Layout(home)
    context = ssl.create_default_context(cafile=str(layout.ca_cert(INFRA)))
    context.check_hostname = False  # node certificates name the node; the authority is what is checked
    context.load_cert_chain(str(layout.cert(OPERATOR)), str(layout.key(OPERATOR)))
    return context


def scrape(home, spec, timeout: float = 1.0) -> Samples | None:
    """The node's samples now, or None when it does not answer (paused, down, no metrics port)."""
    if not spec.metrics_port:
        return None
    secure = not on_loopback(spec.host)
    url = f"{'https' if secure else 'http'}://{spec.host}:{spec.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=_context(home) if secure else None) as answer:
            text = answer.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def total(samples: Samples | None, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    if not samples:
        return 0.0
    return sum(value for have, value in samples.get(name, ()) if all(have.get(k) == v for k, v in labels.items()))


def buckets(samples: Samples | None, name: str, **labels: str) -> dict[float, float]:
    """A histogram's cumulative buckets {upper bound: count} (summed over other labels)."""
    out: dict[float, float] = {}
    for have, value in (samples or {}).get(f"{name}_bucket", ()):
        if all(have.get(k) == v for k, v in labels.items()):
            bound = float(have["le"])
            out[bound] = out.get(bound, 0.0) + value
    return out


def quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """As Prometheus's histogram_quantile: linear within the bucket the rank falls in."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower
