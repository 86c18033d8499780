"""What every Strife node does the same way: read its part of the topology, serve gRPC over mTLS
with health and admin services, arm failpoints, and shut down gracefully on SIGTERM.

A node module supplies a class that fits `Node` (below): what it is, who may call it, and start()
and stop().
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from strife.core import lifeline, log_setup
from strife.core.failpoints import Failpoints
from strife.deployment import tls, topology as topology_model
from strife.deployment.layout import Layout
from strife.deployment.topology import Node as TopologyNode, NodeKind, Topology
from strife.nodes.admin import NodeAdmin
from strife.nodes.health import DiskWatch, NodeHealth
from strife.nodes.interceptors import EVERYONE, AccessInterceptor, CallLogInterceptor
from strife.observe import node_hooks
from strife.rpc import admin_pb2_grpc

MAX_MESSAGE = 64 * 1024  # no Strife request is near this; anything larger is refused unread
# Connections (issue 10, item 7): the channel arguments are grpc-core's (grpc_types.h), checked in 1.85.
HANDSHAKE_TIMEOUT_MS = 5_000       # a connection that has not finished TLS by then is dropped
IDLE_CONNECTION_MS = 5 * 60_000    # a connection with no call for that long is closed (GOAWAY)
MAX_STREAMS_PER_CONNECTION = 100   # concurrent calls on one connection; more wait on the client
FILES_KEPT_FREE = 256              # descriptors incoming connections never get: databases, logs,
MAX_CONNECTIONS = 1 << 20          # etcd and bank channels, gRPC's own
BASE_POLICY = {
    "/grpc.health.v1.Health/": EVERYONE,
    "/strife.admin.NodeAdmin/": frozenset({"operator"}),
}


# async (identity, metadata, context, method): a node's own check after the role's (the gateway's password)
Authenticate = Callable[[Any, dict, grpc.aio.ServicerContext, str], Awaitable[None]]


class Node(Protocol):
    """The contract between the runtime and a node (bank, gateway, client)."""
    KIND: ClassVar[NodeKind]
    ACCEPT: ClassVar[tuple[str, ...]]             # authorities whose client certificates pass the handshake
    POLICY: ClassVar[Mapping[str, frozenset[str]]]  # method or service prefix -> roles that may call it
    authenticate: Authenticate | None              # checked after the role, when the node has one

    def __init__(self, ctx: Context) -> None: ...

    async def start(self) -> None:
        """Called once the port is open; the node is reported SERVING when it returns."""

    async def stop(self) -> None: ...


class Context:
    """What a node gets from the runtime."""

    def __init__(self, topology: Topology, spec: TopologyNode, server: grpc.aio.Server, failpoints: Failpoints):
        self.topology, self.spec, self.server, self.failpoints = topology, spec, server, failpoints
        # Set as the server stops taking calls: a stream open on it takes no more work either.
        self.stopping = asyncio.Event()
        self.layout = topology.layout
        self.log = logging.getLogger(spec.name)


def main(node_class: type[Node], argv: list[str] | None = None) -> None:
    lifeline.hold()  # first: a node never outlives its supervisor
    imported = time.time()
    os.umask(0o077)  # databases, logs and directories this node creates are its owner's alone
    parser = argparse.ArgumentParser(description=f"Strife {node_class.KIND} node (started by `strife up`)")
    parser.add_argument("--home", required=True, help="deployment directory (holds certs/, state/, logs/)")
    parser.add_argument("--name", help="this node's name in the topology (a warm spare the supervisor "
                                       "starts without one learns it when it is needed)")
    args = parser.parse_args(argv)
    name, stages = _wait_for_go(args.name, imported)
    if not name:
        parser.error("--name is required")
    raise_open_file_limit()
    layout = Layout(args.home)
    topology = topology_model.load(layout.resolved, home=args.home)
    spec = topology.node(name)
    # the node writes logs/<node>.log itself (rotated), detached or not; see strife/core/log_setup.py
    with log_setup.process_log(layout.log(spec.name), spec.name, topology.settings):
        asyncio.run(serve(node_class, topology, spec, stages))


def raise_open_file_limit():
    """Soft open-file limit up to the hard one (the common soft 1024 runs out at about a thousand
    idle connections, and then no file, socket or connection can be opened). The new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. an unlimited hard limit the kernel will not grant
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_options(open_files):
    """Bounds that keep idle or half-open connections from starving callers doing real work:
    connections beyond what the descriptors allow are closed at once instead of exhausting them."""
    return [("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
            ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.max_allowed_incoming_connections", connection_cap(open_files))]


def connection_cap(open_files):
    if open_files == resource.RLIM_INFINITY or open_files > MAX_CONNECTIONS:
        open_files = MAX_CONNECTIONS  # gRPC takes an int; no node needs more
    return max(64, open_files - FILES_KEPT_FREE)


def _wait_for_go(name, imported):
    """Imports done: start once the supervisor says so (it may name us only now). The name, and the
    times of the start-up stages so far, which the node reports when it is ready."""
    go = lifeline.wait_for_go()
    return go.get("name") or name, {"imported": imported, "go": time.time()}


async def serve(node_class: type[Node], topology: Topology, spec: TopologyNode,
                stages: dict[str, float] | None = None) -> None:
    node_hooks.begin(topology, spec)
    failpoints = Failpoints(spec.failpoints, on_hit=node_hooks.failpoint_hit)
    await failpoints.hit("start")
    policy = dict(BASE_POLICY, **node_class.POLICY)
    access = AccessInterceptor(policy)
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    server = grpc.aio.server(interceptors=[CallLogInterceptor(spec.name), access], options=server_options(open_files))
    health = NodeHealth()
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # until start() returns
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    admin_pb2_grpc.add_NodeAdminServicer_to_server(NodeAdmin(failpoints), server)
    ctx = Context(topology, spec, server, failpoints)
    node = node_class(ctx)
    access.authenticate = node.authenticate
    server.add_secure_port(spec.address, tls.server_credentials(topology.home, spec.name, node_class.ACCEPT))
    await server.start()
    listening = time.time()
    disk = watch_disk(health, topology, spec)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await node.start()
    settle_garbage_collector()
    observing = node_hooks.serving(topology, spec)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    lifeline.ready(**(stages or {}), listening=listening, ready=time.time())  # the supervisor is not polling
    logging.getLogger(spec.name).info("%s %s serving on %s", node_class.KIND, spec.name, spec.address)
    await stopping.wait()
    logging.getLogger(spec.name).info("stopping")
    await health.enter_graceful_shutdown()
    await disk.stop()
    observing.cancel()
    ctx.stopping.set()
    await server.stop(grace=min(2.0, topology.settings.stop_grace / 2))
    await node.stop()


GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)


def settle_garbage_collector():
    """Per call, a node allocates thousands of objects (tasks, futures, messages), nearly all freed
    by reference counting; at CPython's default pace the cycle collector ran every few calls and
    walked every object the imports made (7 % of the gateway's loop thread in a profile). What
    exists once the node has started is kept out of every collection (gc.freeze), and young
    collections come less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def watch_disk(health, topology, spec):
    """NOT_SERVING, with the reason, while this node cannot write (strife/nodes/health.py)."""
    disk = DiskWatch(health, topology.layout.data(spec.name), topology.home)
    disk.start()
    return disk
