"""Network faults between hosts, applied inside their network namespaces, and the record of the
faults in force (state/faults.json, so any later CLI process sees them, e.g. `strife status`).

Packets are dropped where they arrive (an nftables `input` chain in a table of our own in each
host's namespace): a sender sees what it would see on a real network, silence and timeouts, not an
immediate local error. Every change rebuilds every host's table from the whole list, so the rules
are always exactly the faults recorded.

- partition A B: A's packets do not reach B, nor B's A (`one_way`: only A's do not reach B)
- isolate H: nothing reaches H, and nothing from H reaches another host
- loss H P: P% of the packets H receives, and of those it sends to other hosts, are lost
- latency H D [J]: tc netem on H's link; needs the kernel's netem qdisc, which some kernels lack
"""
import json
import re
import shutil
import subprocess

from strife.core.errors import BadInput, Failed, Unsupported
from strife.launcher.netns import Network

TABLE = "strife_faults"
PERCENT = re.compile(r"(\d+(?:\.\d{1,2})?)\s*%?")


class FaultError(Failed):
    pass


def load(layout):
    try:
        return json.loads(layout.faults.read_text())
    except (FileNotFoundError, ValueError):
        return []


def describe(fault):
    kind = fault["kind"]
    if kind == "partition":
        return f"partition {fault['a']} {'->' if fault['one_way'] else '<->'} {fault['b']}"
    if kind == "isolate":
        return f"isolate {fault['host']}"
    if kind == "loss":
        return f"loss {fault['host']} {fault['percent']:g}%"
    jitter = f" ±{fault['jitter_ms']:g}ms" if fault.get("jitter_ms") else ""
    return f"latency {fault['host']} {fault['delay_ms']:g}ms{jitter}"


def involves(fault, host):
    return host in (fault.get("a"), fault.get("b"), fault.get("host"))


def parse_percent(text):
    match = PERCENT.fullmatch(str(text).strip())
    value = float(match.group(1)) if match else -1
    if not 0 < value <= 100:
        raise BadInput(f"--loss: {text!r} is not a percentage above 0 and at most 100 (e.g. 5%)")
    return value


def partition(a, b, one_way=False):
    if a == b:
        raise BadInput(f"--partition: a host cannot be partitioned from itself ({a})")
    return {"kind": "partition", "a": a, "b": b, "one_way": bool(one_way)}


def isolate(host):
    return {"kind": "isolate", "host": host}


def loss(host, percent):
    return {"kind": "loss", "host": host, "percent": percent}


def latency(host, delay_ms, jitter_ms=0.0):
    return {"kind": "latency", "host": host, "delay_ms": delay_ms, "jitter_ms": jitter_ms}


def rules_for(host, topology, faults):
    """The nftables rules (one per line) of the `input` chain of one host."""
    address = {h.name: h.address for h in topology.hosts}
    rules = ['iifname "lo" accept']
    for f in faults:
        kind = f["kind"]
        if kind == "partition":
            if host == f["b"]:
                rules.append(f"ip saddr {address[f['a']]} drop")
            if host == f["a"] and not f["one_way"]:
                rules.append(f"ip saddr {address[f['b']]} drop")
        elif kind == "isolate":
            rules.append("drop" if host == f["host"] else f"ip saddr {address[f['host']]} drop")
        elif kind == "loss":
            chance = f"numgen random mod 10000 < {round(f['percent'] * 100)} drop"
            rules.append(chance if host == f["host"] else f"ip saddr {address[f['host']]} {chance}")
    return rules


def _ruleset(rules):
    body = "\n".join(f"    {r}" for r in rules)
    return (f"table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n"
            f"{body}\n  }}\n}}\n")


def require_tools():
    if shutil.which("nft") is None:
        raise Unsupported("network faults need nftables' `nft` command (apt-get install nftables)")


def _run(argv, stdin=None):
    return subprocess.run(argv, input=stdin, capture_output=True, text=True)


def apply(topology, layout, faults):
    """Make the namespaces' rules exactly `faults` (partitions, isolation, loss; latency through
    tc netem), then record them."""
    network = Network(topology.home, topology.hosts)
    for host in topology.hosts:
        done = _run([*network.exec_prefix(host.name), "nft", "-f", "-"],
                    _ruleset(rules_for(host.name, topology, faults)))
        if done.returncode != 0:
            raise FaultError(f"nftables refused the rules of host {host.name}: {done.stderr.strip()}")
    _apply_latency(topology, network, faults)
    layout.faults.write_text(json.dumps(faults))


def _apply_latency(topology, network, faults):
    wanted = {f["host"]: f for f in faults if f["kind"] == "latency"}
    for host in topology.hosts:
        tc = [*network.exec_prefix(host.name), "tc", "qdisc"]
        _run([*tc, "del", "dev", "eth0", "root"])  # none there is fine
        f = wanted.get(host.name)
        if f:
            done = _run([*tc, "add", "dev", "eth0", "root", *netem_args(f)])
            if done.returncode != 0:
                raise FaultError(f"tc refused latency on {host.name}: {done.stderr.strip()}")


def netem_args(f):
    jitter = [f"{f['jitter_ms']:g}ms"] if f.get("jitter_ms") else []
    return ["netem", "delay", f"{f['delay_ms']:g}ms", *jitter]


def check_netem(topology, host):
    """Raise Unsupported unless this kernel has the netem qdisc (tried on the host's link)."""
    if shutil.which("tc") is None:
        raise Unsupported("--latency needs iproute2's `tc` command (apt-get install iproute2)")
    network = Network(topology.home, topology.hosts)
    tc = [*network.exec_prefix(host), "tc", "qdisc"]
    existing = _run([*tc, "show", "dev", "eth0"]).stdout
    if "netem" in existing:
        return
    done = _run([*tc, "add", "dev", "eth0", "root", "netem", "delay", "1ms"])
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[0] if done.stderr.strip() else f"exit {done.returncode}"
        raise Unsupported(f"--latency needs the kernel's netem qdisc (module sch_netem), and this kernel has "
                          f"none (tc: {why}); nothing was changed. `delay:DURATION` failpoints slow single "
                          f"nodes instead")
    _run([*tc, "del", "dev", "eth0", "root"])
