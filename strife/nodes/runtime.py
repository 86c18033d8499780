"""What every Strife node does the same way: read its part of the topology, serve gRPC over mTLS
with health and admin services, arm failpoints, and shut down gracefully on SIGTERM.

A node module supplies a class with `start()` (called once the port is open; the node is
reported SERVING when it returns), `stop()`, `POLICY` (method prefix -> roles allowed) and
`ACCEPT` (the authorities whose client certificates pass its TLS handshake).
"""
import argparse
import asyncio
import logging
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from strife import lifeline, tls
from strife.failpoints import Failpoints
from strife.interceptors import EVERYONE, AccessInterceptor, CallLogInterceptor
from strife.launcher import topology as topology_model
from strife.layout import Layout
from strife.nodes.admin import NodeAdmin
from strife.rpc import admin_pb2_grpc

MAX_MESSAGE = 64 * 1024  # no Strife request is near this; anything larger is refused unread
BASE_POLICY = {
    "/grpc.health.v1.Health/": EVERYONE,
    "/strife.admin.NodeAdmin/": frozenset({"operator"}),
}


class Context:
    """What a node gets from the runtime."""

    def __init__(self, topology, spec, server, failpoints):
        self.topology, self.spec, self.server, self.failpoints = topology, spec, server, failpoints
        self.layout = Layout(topology.home)
        self.log = logging.getLogger(spec.name)


def main(node_class, argv=None):
    lifeline.hold()  # first: a node never outlives its supervisor
    imported = time.time()
    parser = argparse.ArgumentParser(description=f"Strife {node_class.KIND} node (started by `strife up`)")
    parser.add_argument("--home", required=True, help="deployment directory (holds certs/, state/, logs/)")
    parser.add_argument("--name", help="this node's name in the topology (a warm spare the supervisor "
                                       "starts without one learns it when it is needed)")
    args = parser.parse_args(argv)
    name, stages = _wait_for_go(args.name, imported)
    if not name:
        parser.error("--name is required")
    # A log line per call is on the hot path: skip what our format never shows (the logging
    # docs' "Optimization" section): caller frames, thread, process and multiprocessing names.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("grpc").setLevel(logging.WARNING)
    topology = topology_model.load(Layout(args.home).resolved, home=args.home)
    spec = topology.node(name)
    asyncio.run(serve(node_class, topology, spec, stages))


def _wait_for_go(name, imported):
    """Imports done: start once the supervisor says so (it may name us only now). The name, and the
    times of the start-up stages so far, which the node reports when it is ready."""
    go = lifeline.wait_for_go()
    return go.get("name") or name, {"imported": imported, "go": time.time()}


async def serve(node_class, topology, spec, stages=None):
    failpoints = Failpoints(spec.failpoints)
    await failpoints.hit("start")
    policy = dict(BASE_POLICY, **node_class.POLICY)
    access = AccessInterceptor(policy)
    server = grpc.aio.server(interceptors=[CallLogInterceptor(spec.name), access],
                             options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # until start() returns
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    admin_pb2_grpc.add_NodeAdminServicer_to_server(NodeAdmin(failpoints), server)
    node = node_class(Context(topology, spec, server, failpoints))
    access.authenticate = getattr(node, "authenticate", None)
    server.add_secure_port(spec.address, tls.server_credentials(topology.home, spec.name, node_class.ACCEPT))
    await server.start()
    listening = time.time()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await node.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    lifeline.ready(**(stages or {}), listening=listening, ready=time.time())  # the supervisor is not polling
    logging.getLogger(spec.name).info("%s %s serving on %s", node_class.KIND, spec.name, spec.address)
    await stopping.wait()
    logging.getLogger(spec.name).info("stopping")
    await health.enter_graceful_shutdown()
    await server.stop(grace=min(2.0, topology.settings.stop_grace / 2))
    await node.stop()
