"""What the runtime (strife/nodes/runtime.py) does for observation in every node: the timeline
file, the metrics endpoint, and the gauge samplers.

SIGUSR1 switches the node's tracing off, SIGUSR2 on again (timeline.switch), and the
`strife_tracing` gauge says which is in force: how `strife bench` measures what tracing costs.
A signal, not a request: only the operator's account (or root) can send it to the node."""
from __future__ import annotations

import asyncio
import os
import signal

from strife.deployment.topology import NodeKind
from strife.observe import metrics, timeline


def begin(topology, spec) -> None:
    """Before the node does anything: its timeline file (a `start` failpoint is in it)."""
    timeline.configure(topology.layout.trace(spec.name), spec.name, topology.settings)
    metrics.TRACING.set(1 if timeline.tracing() else 0)
    loop = asyncio.get_running_loop()
    for signum, on in ((signal.SIGUSR1, False), (signal.SIGUSR2, True)):
        loop.add_signal_handler(signum, _switch_tracing, on)


def _switch_tracing(on: bool) -> None:
    timeline.switch(on)
    metrics.TRACING.set(1 if timeline.tracing() else 0)


def failpoint_hit(step: str, action: str) -> None:
    """A failpoint fired (strife/core/failpoints.py calls this; it imports nothing above core)."""
    timeline.node_event("failpoint", point=step, action=action)


def serving(topology, spec) -> asyncio.Task:
    """Once the node's port is open: its metrics served, its gauges sampled (the task)."""
    metrics.serve(topology.home, spec)
    if spec.kind != NodeKind.CLIENT:  # a client node never talks to etcd: it is spared etcd3aio's import
        from strife.deployment import discovery
        discovery.count_request = lambda operation: metrics.ETCD_ROUND_TRIPS.labels(operation).inc()
    timeline.node_event("started", pid=os.getpid())
    return asyncio.create_task(metrics.run_samplers(), name="metrics samplers")
