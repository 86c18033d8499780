"""Measurements for issue 10 (items 6 and 7), printed as JSON: not a test, nothing is asserted.

    .venv/bin/python -m tests.measure_security_limits [flood|connections|both]

flood: bob's fresh logins (each after a password change, so each needs a real scrypt check),
one after another while another process floods wrong passwords with alice's certificate,
against a baseline with no flood; then how long until alice's right password works again.
connections: a deployment run under `ulimit -Sn 1024` (then under `ulimit -n 1024`, the hard
limit too), 2,000 idle TCP connections to the gateway, then `strife client alice balance` / `pay`,
their latency, the gateway's fds and RSS, and when the gateway drops the idle connections.
Each part starts its own deployment in a temporary directory and removes it.
"""
import asyncio
import json
import resource
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import grpc
import psutil

from strife.deployment import credentials, tls
from strife.deployment.topology import load_deployment
from strife.rpc import cl_gw_pb2 as cl, cl_gw_pb2_grpc
from tests.helpers import SMALL_TOPOLOGY, Deployment

# (attempts, concurrency, attempts per second or 0 for as fast as answered): the pace
# (500 in 23 s), the same 500 unpaced, and a flood long enough to span many of bob's logins
FLOOD_SCENARIOS = [(500, 50, 22), (500, 50, 0), (20000, 50, 0)]
IDLE_CONNECTIONS, SOFT_LIMIT = 2000, 1024


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else None


def summary(ms):
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 1) if ms else None,
            "p99_ms": round(percentile(ms, 99), 1) if ms else None, "max_ms": round(max(ms), 1) if ms else None}


def deployment(tmp):
    home = Path(tmp) / "home"
    home.mkdir()
    (home / "topology.yaml").write_text(textwrap.dedent(SMALL_TOPOLOGY))
    return Deployment(home)


async def call(stub, user, password, timeout=10.0):
    """One ViewBalance as `user` with `password`: (status code name, seconds)."""
    began = time.perf_counter()
    try:
        await stub.ViewBalance(cl.ViewBalanceRequest(), timeout=timeout,
                               metadata=(("x-strife-user", user), ("x-strife-password", password)))
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    return code, time.perf_counter() - began


async def fresh_logins(home, address, samples):
    """`samples` times, bob changes his password, then logs in with the new one: only the login is timed."""
    password = credentials.password(home, "bob")
    times, codes = [], {}
    async with grpc.aio.secure_channel(address, tls.channel_credentials(home, "bob")) as channel:
        stub = cl_gw_pb2_grpc.ClientGatewayStub(channel)
        for _ in range(samples):
            new = "pw-" + secrets.token_urlsafe(12)
            try:
                await stub.UpdateClientDetails(cl.UpdateClientDetailsRequest(new_password=new), timeout=30,
                                               metadata=(("x-strife-user", "bob"), ("x-strife-password", password)))
            except grpc.aio.AioRpcError as exc:
                codes["passwd " + exc.code().name] = codes.get("passwd " + exc.code().name, 0) + 1
                continue
            password = new
            code, seconds = await call(stub, "bob", password)
            codes[code] = codes.get(code, 0) + 1
            if code == "OK":
                times.append(seconds * 1000)
    credentials.set_password(home, "bob", password)
    return times, codes


async def flood(home, address, attempts, concurrency, rate):
    """`attempts` wrong passwords for alice with her certificate, `concurrency` at a time, at most
    `rate` per second (0: as fast as the gateway answers). Run in its own process (`_flood`), so
    that its client-side work does not slow bob's client down."""
    codes, sent = {}, [0]
    channels = [grpc.aio.secure_channel(address, tls.channel_credentials(home, "alice")) for _ in range(4)]
    stubs = [cl_gw_pb2_grpc.ClientGatewayStub(c) for c in channels]
    began = time.perf_counter()

    async def worker(w):
        while sent[0] < attempts:
            sent[0] += 1
            if rate:
                await asyncio.sleep(max(0.0, began + sent[0] / rate - time.perf_counter()))
            code, _ = await call(stubs[w % len(stubs)], "alice", "wrong-" + secrets.token_hex(6))
            codes[code] = codes.get(code, 0) + 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    seconds = time.perf_counter() - began
    for channel in channels:
        await channel.close()
    return {"attempts": attempts, "concurrency": concurrency, "rate_per_s": rate or "unpaced",
            "seconds": round(seconds, 2), "codes": codes}


async def bob_during(home, address, flooder):
    """bob's fresh logins, one after another, for as long as the flood process runs."""
    times, codes = [], {}
    while flooder.poll() is None:
        t, c = await fresh_logins(home, address, 1)
        times += t
        for code, n in c.items():
            codes[code] = codes.get(code, 0) + n
    return times, codes


async def alice_back(home, address):
    """Seconds until alice's right password works again (her lockout has passed)."""
    right = credentials.password(home, "alice")
    async with grpc.aio.secure_channel(address, tls.channel_credentials(home, "alice")) as channel:
        stub = cl_gw_pb2_grpc.ClientGatewayStub(channel)
        began = time.perf_counter()
        while (await call(stub, "alice", right))[0] != "OK" and time.perf_counter() - began < 600:
            await asyncio.sleep(0.25)
        return round(time.perf_counter() - began, 2)


def measure_flood(home, scenarios):
    address = load_deployment(home).of_kind("gateway")[0].address
    out = {"bob_fresh_login_no_flood": summary(asyncio.run(fresh_logins(home, address, 30))[0])}
    for attempts, concurrency, rate in scenarios:
        flooder = subprocess.Popen([sys.executable, "-m", "tests.measure_security_limits", "_flood", str(home),
                                    address, str(attempts), str(concurrency), str(rate)], stdout=subprocess.PIPE)
        during, bob_codes = asyncio.run(bob_during(home, address, flooder))
        label = f"{attempts} wrong at {rate}/s" if rate else f"{attempts} wrong unpaced"
        out[label] = {"bob_fresh_login": summary(during), "bob_codes": bob_codes,
                      "flood": json.loads(flooder.stdout.read()),
                      "alice_right_password_ok_after_s": asyncio.run(alice_back(home, address))}
    return out


def gateway_process(d):
    return psutil.Process(d.node("gateway")["pid"])


def timed_cli(d, *args):
    began = time.perf_counter()
    result = d.run(*args, timeout=120)
    return {"exit": result.returncode, "ms": round((time.perf_counter() - began) * 1000),
            "stderr": result.stderr.strip()[-200:]}


def measure_connections(d, ulimit):
    up = [sys.executable, "-m", "strife", "up", "-d"]
    result = subprocess.run(["bash", "-c", f"{ulimit}; exec {shlex.join(up)}"], cwd=d.home,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    gateway = gateway_process(d)
    host, port = load_deployment(d.home).of_kind("gateway")[0].address.rsplit(":", 1)
    before = {"fds": gateway.num_fds(), "rss_mb": round(gateway.memory_info().rss / 2 ** 20, 1),
              "nofile_limit": gateway.rlimit(psutil.RLIMIT_NOFILE)}
    baseline = {"rpc_on_a_new_connection": summary(asyncio.run(new_connection_balances(d.home, 10))),
                "balance": [timed_cli(d, "client", "alice", "balance") for _ in range(3)]}
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle, refused = [], 0
    began = time.perf_counter()
    for _ in range(IDLE_CONNECTIONS):
        try:
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        except OSError:
            refused += 1
    opened_s = time.perf_counter() - began
    for s in idle:
        s.setblocking(False)
    dropped = {}
    watcher = threading.Thread(target=watch_drops, args=(idle, began, dropped), daemon=True)
    watcher.start()
    try:
        with_idle = {"fds": gateway.num_fds(), "rss_mb": round(gateway.memory_info().rss / 2 ** 20, 1)}
        runs = {"rpc_on_a_new_connection": summary(asyncio.run(new_connection_balances(d.home, 10))),
                "balance": [timed_cli(d, "client", "alice", "balance") for _ in range(3)],
                "pay": [timed_cli(d, "client", "alice", "pay", "bob", "0.01") for _ in range(3)]}
        health = d.node("gateway")
        after_cli = {"fds": gateway.num_fds(), "rss_mb": round(gateway.memory_info().rss / 2 ** 20, 1),
                     "gateway_state": health.get("state"), "gateway_health": health.get("health"),
                     "seconds_since_opened": round(time.perf_counter() - began, 1)}
        watcher.join(60)
        later = {"idle_dropped_by_gateway_s_after_opening": dropped,
                 "rpc_on_a_new_connection": summary(asyncio.run(new_connection_balances(d.home, 10))),
                 "balance": timed_cli(d, "client", "alice", "balance"), "fds": gateway.num_fds()}
    finally:
        for s in idle:
            s.close()
    return {"ulimit": ulimit, "gateway_before": before, "without_idle": baseline, "idle_connections_opened": len(idle),
            "connect_failures": refused, "seconds_to_open": round(opened_s, 1), "gateway_with_idle": with_idle,
            "cli_with_idle_open": runs, "gateway_after_cli": after_cli, "later": later}


async def new_connection_balances(home, n):
    """alice's balance `n` times, each on a new connection (TLS handshake included): ms of the OK ones."""
    address = load_deployment(home).of_kind("gateway")[0].address
    right, times = credentials.password(home, "alice"), []
    for _ in range(n):
        began = time.perf_counter()
        async with grpc.aio.secure_channel(address, tls.channel_credentials(home, "alice")) as channel:
            code, _ = await call(cl_gw_pb2_grpc.ClientGatewayStub(channel), "alice", right)
        if code == "OK":
            times.append((time.perf_counter() - began) * 1000)
    return times


def watch_drops(socks, began, out, limit=60):
    """Seconds (since `began`) when the gateway had closed the first, and then all, of `socks`."""
    while time.perf_counter() - began < limit:
        closed = sum(closed_by_peer(s) for s in socks)
        if closed and "first" not in out:
            out["first"] = round(time.perf_counter() - began, 1)
        if closed == len(socks):
            out["all"] = round(time.perf_counter() - began, 1)
            return
        time.sleep(0.2)


def closed_by_peer(sock):
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def main(argv):
    which = argv[0] if argv else "both"
    if which == "_flood":
        home, address, attempts, concurrency, rate = argv[1:]
        print(json.dumps(asyncio.run(flood(Path(home), address, int(attempts), int(concurrency), float(rate)))))
        return
    out = {}
    if which in ("flood", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            d = deployment(tmp)
            try:
                d.up()
                out["flood"] = measure_flood(d.home, FLOOD_SCENARIOS)
            finally:
                d.teardown()
    if which in ("connections", "both"):
        for ulimit in (f"ulimit -Sn {SOFT_LIMIT}", f"ulimit -n {SOFT_LIMIT}"):  # soft only; soft and hard
            with tempfile.TemporaryDirectory() as tmp:
                d = deployment(tmp)
                try:
                    out[ulimit] = measure_connections(d, ulimit)
                finally:
                    d.teardown()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
