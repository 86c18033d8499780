"""The bench's echo and payments taken in turns (as strife/checks/bench/alternate.py does), for a
deployment of the code before issue 14 (commit 565a093), whose own bench measured them one after
the other. Not part of Strife: it imports that checkout's modules. In a checkout of 565a093 with its
venv: `strife up -d` in a directory holding the default topology.yaml, then
`python docs/baseline_alternating_bench.py DIR 10` (prints one JSON object), then `strife down`.
docs/performance.md compares it with `strife bench --seconds 10 --json` of main."""
import asyncio, collections, dataclasses, json, random, subprocess, sys, uuid
from pathlib import Path
import grpc, psutil
from strife import tls
from strife.bench.load import closed_loop
from strife.bench.run import Bench, PAYLOAD
from strife.gateway_client import GatewayClient, load_deployment
from strife.launcher import certs
from strife.rpc import cl_gw_pb2 as cl, echo_pb2, echo_pb2_grpc

def cpu_of(procs):
    out = {}
    for name, p in procs.items():
        try:
            t = p.cpu_times(); out[name] = t.user + t.system
        except psutil.Error:
            pass
    return out

@dataclasses.dataclass
class Side:
    label: str; call: object; concurrency: int; procs: dict | None = None
    samples: list = dataclasses.field(default_factory=list); span: float = 0.0
    used: collections.Counter = dataclasses.field(default_factory=collections.Counter)

async def alternate(sides, seconds, slice_seconds):
    rounds = max(1 if seconds < 1 else 2, round(seconds / slice_seconds))
    for _ in range(rounds):
        for side in sides:
            before = cpu_of(side.procs) if side.procs is not None else None
            taken = await closed_loop(side.call, side.concurrency, seconds / rounds)
            if before is not None:
                after = cpu_of(side.procs)
                side.used.update({k: after[k] - before[k] for k in after if k in before})
            side.samples += [dataclasses.replace(s, started=s.started + side.span) for s in taken]
            side.span += max((s.started + s.latency for s in taken), default=0.0)

def summary(side):
    ok = sorted(s.latency for s in side.samples if s.outcome == "ok")
    pct = lambda p: round(ok[max(0, min(len(ok) - 1, -(-p * len(ok) // 100) - 1))] * 1000, 3) if ok else 0
    return {"count": len(side.samples), "ok": len(ok), "per_s": round(len(ok) / side.span, 1), "p50_ms": pct(50), "p99_ms": pct(99)}

async def main(home, seconds):
    topology = load_deployment(Path(home))
    bench = Bench(topology, seconds, 32, lambda t: None)
    users = await bench._accounts()
    pids, _ = await bench._deployment_pids()
    me = psutil.Process()
    server = subprocess.Popen([sys.executable, "-m", "strife.bench.echo", "--home", str(home)], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    try:
        creds = tls.channel_credentials(Path(home), certs.OPERATOR)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Echo(echo_pb2.EchoMessage(payload=PAYLOAD), wait_for_ready=True, timeout=10)
            async def echo(w, n):
                await stub.Echo(echo_pb2.EchoMessage(payload=PAYLOAD), timeout=10); return "ok"
            async def payer(concurrency):
                clients = {u: GatewayClient(topology, u) for u in users[:concurrency]}
                await asyncio.gather(*(c.balance() for c in clients.values()))  # logged in before any clock
                rng = random.Random(concurrency)
                async def pay(w, n):
                    p = users[w % len(clients)]
                    a = await clients[p].pay(rng.choice([u for u in users if u != p]), 1, str(uuid.uuid4()), timeout=10)
                    return {cl.COMMITTED: "ok", cl.ABORTED: "aborted"}.get(a.outcome, "error")
                return pay, clients
            pay1, c1 = await payer(1)
            await closed_loop(pay1, 1, 0.5)  # warm-up
            e1, p1 = Side("echo1", echo, 1), Side("pay1", pay1, 1)
            await alternate([e1, p1], min(seconds, 3.0), 1.0)
            pay32, c32 = await payer(32)
            procs = {n: psutil.Process(p) for n, p in pids.items()}
            procs["load generator"] = me
            em = Side("echo", echo, 32, {"echo server": psutil.Process(server.pid), "load generator": me})
            pm = Side("pay", pay32, 32, procs)
            await alternate([em, pm], seconds, 2.0)
            for c in (*c1.values(), *c32.values()):
                await c.close()
    finally:
        server.terminate(); server.wait(10)
    per = lambda side: {k: round(v * 1000 / len(side.samples), 3) for k, v in sorted(side.used.items(), key=lambda kv: -kv[1])}
    f = {"payments": summary(pm), "echo": summary(em), "payments_single": summary(p1), "echo_single": summary(e1),
         "cpu_ms_per_payment": per(pm), "cpu_ms_per_echo": per(em)}
    f["cpu_ms_per_payment"]["total"] = round(sum(f["cpu_ms_per_payment"].values()), 3)
    f["cpu_ms_per_echo"]["total"] = round(sum(f["cpu_ms_per_echo"].values()), 3)
    f["ratio"] = round(f["payments"]["per_s"] * 6 / f["echo"]["per_s"], 3)
    f["single_p50_over_echo_p50"] = round(f["payments_single"]["p50_ms"] / f["echo_single"]["p50_ms"], 2)
    print(json.dumps(f))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
