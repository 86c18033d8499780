"""Prometheus metrics of a node, served by prometheus_client on the node's metrics port.

Names follow Prometheus conventions: base units (seconds), counters end in `_total`. The default
registry also carries the library's process collector (process_resident_memory_bytes,
process_cpu_seconds_total, process_open_fds) and its Python collectors.

Not open to users: bound to the node's host address, and off loopback served over TLS with the
node's own certificate, a client certificate from the infrastructure authority required (the
operator's, as `strife top` uses). On loopback plain HTTP: only this machine can reach it.
Gauges that need a look at a database (holds, outbox depth) are sampled once a second on the
node's event loop (`sample`), never from the HTTP server's thread, which must not touch SQLite
connections owned by the loop.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from strife.deployment.tls import on_loopback
from strife.deployment.identities import INFRA
from strife.deployment.layout import Layout

log = logging.getLogger(__name__)

# Payment latencies run from a millisecond (same bank) to seconds (a prepare timeout, retries).
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)

PAYMENTS = Counter("strife_payments", "Payments given a definite answer by this gateway, by outcome and "
                   "abort reason", ["outcome", "reason"])
STAGE_SECONDS = Histogram("strife_payment_stage_seconds", "Time spent in each stage of a payment",
                          ["stage"], buckets=LATENCY_BUCKETS)
PHASE2_RETRIES = Counter("strife_phase2_retries", "Phase-2 deliveries to a bank sent again after "
                         "one was not acknowledged", ["bank"])
RECOVERED = Counter("strife_payments_recovered", "Payments this gateway's recovery pass drove to an "
                    "end, by decision", ["decision"])
HOLDS_PREPARED = Gauge("strife_holds_prepared", "Holds in PREPARED state at this bank")
HOLDS_IN_DOUBT = Gauge("strife_holds_in_doubt", "PREPARED holds older than prepare_timeout: their "
                       "phase 2 is late (the resolver settles them after hold_timeout)")
RESOLVED = Counter("strife_holds_resolved", "Holds this bank settled itself from etcd (the in-doubt "
                   "resolver)", ["outcome"])
OUTBOX_DEPTH = Gauge("strife_outbox_depth", "Payments in this client's outbox with no definite outcome",
                     ["client"])
SEND_ATTEMPTS = Counter("strife_send_attempts", "Attempts to deliver a payment from the outbox, by result",
                        ["client", "result"])
LOGIN_FAILURES = Counter("strife_login_failures", "Failed logins at this gateway")
ETCD_ROUND_TRIPS = Counter("strife_etcd_round_trips", "Requests this node made to etcd for payments, "
                           "by operation", ["operation"])
TRACING = Gauge("strife_tracing", "1 while this node writes its timeline of payments (logs/<node>.trace.jsonl); "
                "0 when it has none (trace_sample 0) or the operator switched it off (SIGUSR1; SIGUSR2 on)")
FAILPOINTS_FIRED = Counter("strife_failpoints_fired", "Failpoints that fired in this node", ["step", "action"])

_samplers: list[Callable[[], None]] = []




def serve(home, spec) -> None:
    """Serve this node's metrics on spec.host:spec.metrics_port (nothing when it has none)."""
    if not spec.metrics_port:
        return
    if on_loopback(spec.host):
        start_http_server(spec.metrics_port, addr=spec.host)
        return
    layout = Layout(home)
    start_http_server(spec.metrics_port, addr=spec.host, certfile=str(layout.cert(spec.name)),
                      keyfile=str(layout.key(spec.name)), client_cafile=str(layout.ca_cert(INFRA)),
                      client_auth_required=True)


def sample(look: Callable[[], None]) -> None:
    """Call `look` (which sets gauges) once a second on the node's event loop."""
    _samplers.append(look)


async def run_samplers(interval: float = 1.0) -> None:
    while True:
        for look in _samplers:
            try:
                look()
            except Exception as exc:  # noqa: BLE001 (a gauge that cannot be read now is read next time)
                log.debug("metrics sample failed: %s", exc)
        await asyncio.sleep(interval)
