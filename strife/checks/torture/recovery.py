"""How long each fault kept its node, and the payments through it, away (for `strife torture`).

For every fault: seconds from the fault until its node was RUNNING again once the fault was over
(with another process, if it was killed), and until the first payment sent after the fault that
touches the node committed (for a bank: a payer's or payee's bank; the gateway and etcd carry every
payment; a client: its own payments). Then p50 and max per kind of fault and kind of node.
"""
import asyncio
import statistics
import time

POLL = 0.02      # seconds between two looks at the supervisor's status while a node is away
GIVE_UP = 30.0   # a node away longer than this is reported as never back (None)
KILLS = ("kill", "restart-etcd")


async def until_healthy(status, fault, node, injected_at, pid_before):
    """Seconds from `injected_at` until `node` is RUNNING after the fault is over; None if never."""
    over = injected_at + (0.0 if fault.kind in KILLS else fault.duration)
    while (now := time.monotonic()) - injected_at < GIVE_UP:
        shown = (await status()).node(node)
        if now >= over and shown.state == "RUNNING" and (fault.kind not in KILLS or
                                                         shown.pid not in (None, pid_before)):
            return now - injected_at
        await asyncio.sleep(POLL)
    return None


def until_commit(sent, touches, injected_at):
    """Seconds from `injected_at` until the first payment sent since then that touches the node committed."""
    answered = [s.answered_at for s in sent if s.sent_at >= injected_at and s.outcome == "committed"
                and s.answered_at is not None and touches(s)]
    return min(answered) - injected_at if answered else None


def toucher(topology, node):
    """A predicate: does a payment go through this node?"""
    kind = topology.node(node).kind
    if kind in ("etcd", "gateway"):
        return lambda sent: True
    if kind == "client":
        return lambda sent: node in (sent.payer, sent.payee)
    bank_of = {c.name: c.bank for c in topology.of_kind("client")}
    return lambda sent: node in (bank_of.get(sent.payer), bank_of.get(sent.payee))


def longest_gap(sent, began, ended):
    """The longest stretch, in seconds, without any committed answer between began and ended."""
    times = sorted(s.answered_at for s in sent if s.outcome == "committed" and s.answered_at is not None
                   and began <= s.answered_at <= ended)
    edges = [began, *times, ended]
    return max(b - a for a, b in zip(edges, edges[1:]))


def summary(records):
    """{"kill bank": {"count": n, "healthy_p50": s, "healthy_max": s, "commit_p50": s, "commit_max": s}}."""
    groups = {}
    for record in records:
        if record["applied"]:
            groups.setdefault(f"{record['kind']} {record['node_kind']}", []).append(record)
    out = {}
    for name, group in sorted(groups.items()):
        out[name] = {"count": len(group)}
        for measure in ("healthy", "commit"):
            values = [r[f"{measure}_s"] for r in group if r[f"{measure}_s"] is not None]
            out[name][f"{measure}_p50"] = round(statistics.median(values), 3) if values else None
            out[name][f"{measure}_max"] = round(max(values), 3) if values else None
            out[name][f"{measure}_missing"] = len(group) - len(values)
    return out
