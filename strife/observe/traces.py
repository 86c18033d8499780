"""Reading the nodes' timeline files (strife/observe/timeline.py) back: one payment's steps across
every node, in time order, and the payments worth a look (the latest, the slowest).

Clocks: records carry each node's wall clock. On one machine they agree; across hosts the offsets
are as good as the hosts' clock synchronisation.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

from strife.core.outcomes import Outcome
from strife.deployment.layout import Layout

# the steps that end a payment's first answer, and those that are the client's view of it
ANSWER_STEPS = ("reply",)


def records(layout: Layout, containing: str | None = None) -> Iterator[dict]:
    """Every record of every node (those whose line contains `containing`, when given)."""
    for path in layout.traces():  # every node's, and the rotated copies (.1, .2, ...)
        try:
            with open(path, encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    if containing is not None and containing not in line:
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line cut by a crash mid-write
                        continue
                    if isinstance(record, dict) and "t" in record and "step" in record:
                        yield record
        except FileNotFoundError:  # rotated away while we read
            continue


@dataclasses.dataclass
class Trace:
    txn_id: str
    steps: list[dict]      # this payment's records, in start order, each with "offset_ms"
    events: list[dict]     # what happened to the nodes meanwhile: failpoints, (re)starts
    started: float         # unix seconds of the first step

    @property
    def end(self) -> float:
        return max(r["t"] + r.get("ms", 0) / 1000 for r in self.steps + self.events)

    @property
    def duration_ms(self) -> float:
        return round((self.end - self.started) * 1000, 3)

    def answer(self) -> dict | None:
        """The first definite reply a gateway gave (or the last reply, if none was definite)."""
        replies = [r for r in self.steps if r["step"] == "reply"]
        final = [r for r in replies if r.get("outcome") in (Outcome.COMMITTED, Outcome.ABORTED)]
        if final:
            return final[0]
        recovered = [r for r in self.steps if r["step"] == "recovery" and r.get("outcome")]
        if recovered:
            return recovered[0]
        return replies[-1] if replies else None

    def terms(self) -> dict:
        received = next((r for r in self.steps if r["step"] == "received"), None)
        if received is None:
            return {}
        return {k: received.get(k) for k in ("payer", "payee", "amount_minor")}

    def finished_by(self) -> list[str]:
        """Who brought the payment to its end besides the gateway that answered at once."""
        who = []
        for r in self.steps:
            if r["step"] == "recovery":
                who.append(f"{r['node']} recovery pass ({r.get('decision')})")
            elif r["step"] == "resolved":
                who.append(f"{r['node']} {r.get('by', 'resolver')} ({r.get('outcome')})")
        return list(dict.fromkeys(who))

    def restarts(self) -> list[dict]:
        """Nodes of this payment that started again while it was under way: the gap is from the
        node's last record before its start to the start."""
        gaps = []
        for event in self.events:
            if event["step"] != "started":
                continue
            before = [r for r in self.steps + self.events
                      if r["node"] == event["node"] and r["t"] < event["t"] and r is not event]
            last = max((r["t"] + r.get("ms", 0) / 1000 for r in before), default=self.started)
            gaps.append({"node": event["node"], "down_from": last, "started": event["t"],
                         "gap_ms": round((event["t"] - last) * 1000, 3)})
        return gaps

    def to_dict(self) -> dict:
        answer = self.answer() or {}
        return {"txn_id": self.txn_id, **self.terms(),
                "outcome": answer.get("outcome"), "reason": answer.get("reason") or None,
                "started": self.started, "duration_ms": self.duration_ms,
                "finished_by": self.finished_by(), "restarts": self.restarts(),
                "steps": [_shown(r, self.started) for r in sorted(self.steps + self.events, key=_start)]}


def _start(record):
    return record["t"]


def _shown(record, origin):
    shown = {"offset_ms": round((record["t"] - origin) * 1000, 3), **record}
    shown.pop("t")
    if shown.get("txn") is not None:
        shown.pop("txn")
    return shown


def trace(layout: Layout, txn_id: str) -> Trace | None:
    steps = [r for r in records(layout, containing=txn_id) if r.get("txn") == txn_id]
    if not steps:
        return None
    steps.sort(key=_start)
    first = steps[0]["t"]
    last = max(r["t"] + r.get("ms", 0) / 1000 for r in steps)
    nodes = {r["node"] for r in steps}
    events = [r for r in records(layout, containing='"txn":null')
              if r.get("txn") is None and r.get("node") in nodes and first <= r["t"] <= last]
    return Trace(txn_id, steps, sorted(events, key=_start), first)


@dataclasses.dataclass
class Summary:
    txn_id: str
    started: float
    duration_ms: float
    outcome: str | None
    payer: str | None
    payee: str | None
    amount_minor: int | None


def summaries(layout: Layout) -> list[Summary]:
    """One line per payment in the timeline files: when it began, how long until its first
    definite answer (or its last record), and that answer."""
    by_txn: dict[str, list[dict]] = {}
    for r in records(layout):
        txn = r.get("txn")
        if txn:
            by_txn.setdefault(txn, []).append(r)
    out = []
    for txn, steps in by_txn.items():
        steps.sort(key=_start)
        t = Trace(txn, steps, [], steps[0]["t"])
        answer = t.answer()
        end = answer["t"] + answer.get("ms", 0) / 1000 if answer and answer["step"] == "reply" else t.end
        # the client's wait counts: a payment queued while the gateway was away was slow for its payer
        sent = [r["t"] + r.get("ms", 0) / 1000 for r in steps if r["step"] == "send"
                and r.get("result") in ("committed", "aborted")]
        if sent:
            end = max(end, sent[0])
        terms = t.terms()
        out.append(Summary(txn, t.started, round((end - t.started) * 1000, 3), answer.get("outcome") if answer else None,
                           terms.get("payer"), terms.get("payee"), terms.get("amount_minor")))
    return out


def latest(layout: Layout, n: int) -> list[Summary]:
    return sorted(summaries(layout), key=lambda s: s.started, reverse=True)[:n]


def slowest(layout: Layout, n: int) -> list[Summary]:
    return sorted(summaries(layout), key=lambda s: s.duration_ms, reverse=True)[:n]
