"""Resources (issue 10, item 7): every node raises its open-file limit, and idle connections
cannot starve paying users, even when the deployment is started under `ulimit -Sn 1024`."""
import resource
import shlex
import socket
import subprocess

import psutil
import pytest

from strife.deployment.topology import load_deployment
from strife.nodes import runtime
from tests.helpers import STRIFE, wait_for

IDLE, SOFT = 2000, 1024


def test_the_connection_cap_leaves_descriptors_free_and_fits_grpc():
    assert runtime.connection_cap(1024) == 1024 - runtime.FILES_KEPT_FREE
    assert runtime.connection_cap(100) == 64
    assert runtime.connection_cap(resource.RLIM_INFINITY) < 2 ** 31 - 1
    assert runtime.connection_cap(2 ** 40) < 2 ** 31 - 1


def closed_by_peer(sock):
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_connections_under_ulimit_1024_do_not_starve_paying_users(deployment):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE + 512:
        pytest.skip(f"the hard open-file limit ({hard}) leaves no room for {IDLE} connections")
    d = deployment()
    up = subprocess.run(["bash", "-c", f"ulimit -Sn {SOFT}; exec {shlex.join([*STRIFE, 'up', '-d'])}"],
                        cwd=d.home, capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    nodes = [n for n in d.status()["nodes"] if n["kind"] != "etcd"]
    for node in nodes:  # each started with soft 1024, each raised it
        assert psutil.Process(node["pid"]).rlimit(psutil.RLIMIT_NOFILE) == (hard, hard), node["name"]
    host, port = load_deployment(d.home).of_kind("gateway")[0].address.rsplit(":", 1)

    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this test's own 2,000 sockets
    idle = []
    try:
        for _ in range(IDLE):
            idle.append(socket.create_connection((host, int(port)), timeout=10))  # never a TLS byte
        balance = d.run("client", "alice", "balance")
        assert balance.returncode == 0, balance.stderr
        pay = d.run("client", "alice", "pay", "bob", "1")
        assert pay.returncode == 0, pay.stdout + pay.stderr
        assert d.node("gateway")["health"] == "SERVING"
        # a connection that never starts TLS is dropped by the gateway after its handshake timeout
        for sock in idle:
            sock.setblocking(False)
        wait_for(lambda: all(closed_by_peer(s) for s in idle), timeout=60, what="the gateway to drop idle connections")
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
