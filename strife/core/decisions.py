"""The outcome of a transaction, recorded once in etcd.

The coordinator writes `/strife/txn/<id>/decision` = COMMIT|ABORT, and beside it, in the same etcd
transaction, `/strife/txn/<id>/answer`: the answer it gives the client (outcome, reason, detail),
so the first definite answer is as durable as the decision and every later path repeats it. A bank that gives up on an
in-doubt hold writes `/strife/aborts/<bank>/<id>` = ABORT under a prefix only it may write (etcd
grants by key range, not by value, so a bank cannot be allowed to write COMMIT anywhere). The two
are kept exclusive by etcd transactions that compare both: a COMMIT is written only while no
participant's abort exists, and a bank's abort only while no decision exists. Whoever writes
first wins; everyone else obeys what stands. No lease: a decision must outlive every process
that could ask about it.

The payment record is these keys and `/strife/txn/<id>/terms`: the terms of the payment (payer,
payee, their banks, amount, created_at) and their fingerprint. With several gateways a gateway
claims the terms (create-if-absent) before it prepares anything, so one id is only ever prepared
with one set of terms, whichever gateways receive it; with one gateway the terms are written in the
decision's own transaction. The record is deleted `idempotency_retention` after phase 2 completed.
"""
import asyncio
import dataclasses
import json

from etcd3aio import prefix_range_end

from strife.core.outcomes import AbortReason, Outcome

COMMIT, ABORT = "COMMIT", "ABORT"
PREFIX = "/strife/txn/"
SUFFIX = "/decision"
ANSWER = "/answer"
TERMS = "/terms"
ABORTS = "/strife/aborts/"
PAGE = 5000  # keys per read: a deployment can hold many decisions, far past gRPC's 4 MB
# The answer when a bank's in-doubt resolver aborted the payment before the coordinator decided.
RESOLVED_BY_BANK = {"outcome": Outcome.ABORTED, "reason": AbortReason.RECOVERED_ABORT,
                    "detail": "aborted by in-doubt resolution before the gateway decided"}


def key(txn_id):
    return f"{PREFIX}{txn_id}{SUFFIX}"


def answer_key(txn_id):
    return f"{PREFIX}{txn_id}{ANSWER}"


def terms_key(txn_id):
    return f"{PREFIX}{txn_id}{TERMS}"


def _json(value):
    return json.dumps(value, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a claim of a payment's terms found: the terms that stand, and its answer if one is recorded."""
    terms: dict
    answer: dict | None = None
    outcome: str | None = None


async def claim_many(etcd, items, timeout=5.0):
    """Claim (txn_id, terms) each, create-if-absent, in one etcd transaction; the Claim of each.

    All-or-nothing in etcd: if any id is claimed already, none is written and each is claimed on
    its own, reading the terms, decision and answer that stand."""
    kv = etcd.kv
    reply = await kv.txn(compare=[kv.txn_compare_create_revision(terms_key(t), 0) for t, _ in items],
                         success=[kv.txn_op_put(terms_key(t), _json(terms)) for t, terms in items], timeout=timeout)
    if reply.succeeded:
        return [Claim(terms) for _, terms in items]
    return await asyncio.gather(*(_claim(etcd, txn_id, terms, timeout) for txn_id, terms in items))


async def _claim(etcd, txn_id, terms, timeout):
    kv = etcd.kv
    reply = await kv.txn(compare=[kv.txn_compare_create_revision(terms_key(txn_id), 0)],
                         success=[kv.txn_op_put(terms_key(txn_id), _json(terms))],
                         failure=[kv.txn_op_get(k) for k in (terms_key(txn_id), key(txn_id), answer_key(txn_id))],
                         timeout=timeout)
    if reply.succeeded:
        return Claim(terms)
    decided = reply.responses[1].response_range.kvs
    return Claim(_recorded(reply.responses[0]) or terms, _recorded(reply.responses[2]),
                 decided[0].value.decode() if decided else None)


@dataclasses.dataclass(frozen=True)
class Standing:
    """The outcome that stands, and the answer recorded with it (None where none was recorded)."""
    outcome: str | None
    answer: dict | None = None


def abort_prefix(bank):
    """The range a bank may write: its own aborts and nothing else."""
    return f"{ABORTS}{bank}/"


def abort_key(bank, txn_id):
    return f"{abort_prefix(bank)}{txn_id}"


def _stands(responses):
    """The outcome that stands from reads of [decision, abort keys...]."""
    values = [kv.value.decode() for r in responses for kv in r.response_range.kvs]
    decided = responses[0].response_range.kvs
    if decided:
        return decided[0].value.decode()
    return ABORT if values else None


def _recorded(response):
    kvs = response.response_range.kvs
    return json.loads(kvs[0].value) if kvs else None


def _writes(kv, txn_id, outcome, answer, terms=None):
    ops = [kv.txn_op_put(key(txn_id), outcome)]
    if answer is not None:
        ops.append(kv.txn_op_put(answer_key(txn_id), _json(answer)))
    if terms is not None:
        ops.append(kv.txn_op_put(terms_key(txn_id), _json(terms)))
    return ops


async def decide(etcd, txn_id, outcome, banks=(), answer=None, timeout=5.0, terms=None):
    """The coordinator: record `outcome` (and the client's `answer` beside it) unless a decision
    exists; return the Standing: what stands and the answer recorded with it.

    A COMMIT also requires that none of the participating `banks` has recorded its abort; when one
    has, the coordinator records ABORT with the answer RESOLVED_BY_BANK (so a decision always
    exists once a client was answered)."""
    kv = etcd.kv
    aborts = [abort_key(b, txn_id) for b in banks] if outcome == COMMIT else []
    reply = await kv.txn(compare=[kv.txn_compare_create_revision(k, 0) for k in [key(txn_id), *aborts]],
                         success=_writes(kv, txn_id, outcome, answer, terms),
                         failure=[kv.txn_op_get(k) for k in [key(txn_id), answer_key(txn_id), *aborts]],
                         timeout=timeout)
    if reply.succeeded:
        return Standing(outcome, answer)
    decided, recorded = reply.responses[0].response_range.kvs, _recorded(reply.responses[1])
    if decided:
        return Standing(decided[0].value.decode(), recorded)
    return await decide(etcd, txn_id, ABORT, answer=RESOLVED_BY_BANK, timeout=timeout, terms=terms)  # a bank aborted


async def abort_as_bank(etcd, bank, txn_id, timeout=5.0):
    """A participant: record its own ABORT unless the coordinator decided; the outcome that stands."""
    kv = etcd.kv
    answer = await kv.txn(compare=[kv.txn_compare_create_revision(key(txn_id), 0)],
                          success=[kv.txn_op_put(abort_key(bank, txn_id), ABORT)],
                          failure=[kv.txn_op_get(key(txn_id))], timeout=timeout)
    if answer.succeeded:
        return ABORT
    return _stands(answer.responses)


async def read_answers(etcd, txn_ids, timeout=5.0):
    """{txn_id: answer} of those of `txn_ids` with an answer recorded (100 reads per etcd transaction)."""
    kv, found = etcd.kv, {}
    txn_ids = list(txn_ids)
    for i in range(0, len(txn_ids), 100):
        chunk = txn_ids[i:i + 100]
        reply = await kv.txn(compare=[], success=[kv.txn_op_get(answer_key(t)) for t in chunk], failure=[],
                             timeout=timeout)
        for txn_id, response in zip(chunk, reply.responses):
            recorded = _recorded(response)
            if recorded is not None:
                found[txn_id] = recorded
    return found


async def read(etcd, txn_id, banks=(), timeout=5.0):
    """The recorded outcome (the decision, else ABORT when one of `banks` aborted), or None."""
    kv = etcd.kv
    answer = await kv.txn(compare=[], success=[kv.txn_op_get(k) for k in
                                               [key(txn_id)] + [abort_key(b, txn_id) for b in banks]],
                          failure=[], timeout=timeout)
    return _stands(answer.responses)


@dataclasses.dataclass
class Record:
    decision: str | None = None              # what the coordinator wrote
    aborted_by: list = dataclasses.field(default_factory=list)  # banks that recorded their abort

    @property
    def outcome(self):
        return self.decision or ABORT


async def _scan(etcd, prefix, revision, timeout):
    """Every (key, value) under `prefix` at one revision, page by page; and that revision."""
    start, end = prefix.encode(), prefix_range_end(prefix)
    while True:
        answer = await etcd.kv.get(start, range_end=end, revision=revision, limit=PAGE, timeout=timeout)
        revision = revision or answer.header.revision  # later pages see the same snapshot
        for kv in answer.kvs:
            yield kv.key.decode(), kv.value.decode(), revision
        if not answer.more or not answer.kvs:
            return
        start = answer.kvs[-1].key + b"\0"


async def read_records(etcd, timeout=10.0):
    """{txn_id: Record} of every recorded decision and bank abort, read at one revision."""
    records, revision = {}, 0
    async for name, value, revision in _scan(etcd, PREFIX, revision, timeout):
        if name.endswith(SUFFIX):
            records.setdefault(name[len(PREFIX):-len(SUFFIX)], Record()).decision = value
    async for name, _, revision in _scan(etcd, ABORTS, revision, timeout):
        bank, _, txn_id = name[len(ABORTS):].partition("/")
        records.setdefault(txn_id, Record()).aborted_by.append(bank)
    return records


async def read_all(etcd, timeout=10.0):
    """{txn_id: COMMIT|ABORT} of every transaction with a recorded outcome."""
    return {txn: record.outcome for txn, record in (await read_records(etcd, timeout)).items()}


async def decide_many(etcd, items, timeout=5.0):
    """decide() for several (txn_id, outcome, banks, answer, terms or None) in one etcd transaction;
    their Standings.

    All-or-nothing in etcd: if any of them was decided already (a bank's resolver was first),
    none is written and each is settled on its own.
    """
    kv = etcd.kv
    compare, success = [], []
    items = [tuple(item) + (None,) * (5 - len(item)) for item in items]  # terms are optional
    for txn_id, outcome, banks, answer, terms in items:
        compare.append(kv.txn_compare_create_revision(key(txn_id), 0))
        if outcome == COMMIT:
            compare.extend(kv.txn_compare_create_revision(abort_key(b, txn_id), 0) for b in banks)
        success.extend(_writes(kv, txn_id, outcome, answer, terms))
    reply = await kv.txn(compare=compare, success=success, timeout=timeout)
    if reply.succeeded:
        return [Standing(outcome, answer) for _, outcome, _, answer, _ in items]
    # each on its own, all at once: with several gateways, racing ids make this path common
    return await asyncio.gather(*(decide(etcd, t, outcome, banks, answer, timeout, terms)
                                  for t, outcome, banks, answer, terms in items))


async def read_many(etcd, txn_ids, bank, timeout=5.0):
    """{txn_id: COMMIT|ABORT|None} as a participant `bank` sees it (the decision, or its own abort)."""
    kv = etcd.kv
    ops = [kv.txn_op_get(k) for t in txn_ids for k in (key(t), abort_key(bank, t))]
    reply = await kv.txn(compare=[], success=ops, failure=[], timeout=timeout)
    return {t: _stands(reply.responses[2 * i:2 * i + 2]) for i, t in enumerate(txn_ids)}


async def forget(etcd, items, timeout=5.0):
    """Delete the record (terms, decision, answer) and bank aborts of finished transactions:
    (txn_id, banks) each. Only for a transaction every participant has applied, once its retention is over."""
    kv = etcd.kv
    ops = []
    for txn_id, banks in items:
        ops += [kv.txn_op_delete(key(txn_id)), kv.txn_op_delete(answer_key(txn_id)), kv.txn_op_delete(terms_key(txn_id))]
        ops += [kv.txn_op_delete(abort_key(b, txn_id)) for b in banks]
    await kv.txn(compare=[], success=ops, failure=[], timeout=timeout)
