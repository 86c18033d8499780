"""What the runtime (strife/nodes/runtime.py) does for observation in every node: the timeline
file, the metrics endpoint, and the gauge samplers."""
from __future__ import annotations

import asyncio
import os

from strife.deployment.layout import Layout
from strife.observe import metrics, timeline


def begin(topology, spec) -> None:
    """Before the node does anything: its timeline file (a `start` failpoint is in it)."""
    timeline.configure(timeline.file_of(Layout(topology.home), spec.name), spec.name, topology.settings)


def failpoint_hit(step: str, action: str) -> None:
    """A failpoint fired (strife/core/failpoints.py calls this; it imports nothing above core)."""
    timeline.node_event("failpoint", point=step, action=action)


def serving(topology, spec) -> asyncio.Task:
    """Once the node's port is open: its metrics served, its gauges sampled (the task)."""
    metrics.serve(topology.home, spec)
    if spec.kind != "client":  # a client node never talks to etcd: it is spared etcd3aio's import
        from strife.deployment import discovery
        discovery.count_request = lambda operation: metrics.ETCD_ROUND_TRIPS.labels(operation).inc()
    timeline.node_event("started", pid=os.getpid())
    return asyncio.create_task(metrics.run_samplers(), name="metrics samplers")
