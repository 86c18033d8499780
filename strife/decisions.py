"""The outcome of a transaction, recorded once in etcd.

The coordinator writes `/strife/txn/<id>/decision` = COMMIT|ABORT. A bank that gives up on an
in-doubt hold writes `/strife/aborts/<bank>/<id>` = ABORT under a prefix only it may write (etcd
grants by key range, not by value, so a bank cannot be allowed to write COMMIT anywhere). The two
are kept exclusive by etcd transactions that compare both: a COMMIT is written only while no
participant's abort exists, and a bank's abort only while no decision exists. Whoever writes
first wins; everyone else obeys what stands. No lease: a decision must outlive every process
that could ask about it.
"""
import dataclasses

from etcd3aio import prefix_range_end

COMMIT, ABORT = "COMMIT", "ABORT"
PREFIX = "/strife/txn/"
SUFFIX = "/decision"
ABORTS = "/strife/aborts/"
PAGE = 5000  # keys per read: a deployment holds one key per payment ever made, far past gRPC's 4 MB


def key(txn_id):
    return f"{PREFIX}{txn_id}{SUFFIX}"


def abort_prefix(bank):
    """The range a bank may write: its own aborts and nothing else."""
    return f"{ABORTS}{bank}/"


def abort_key(bank, txn_id):
    return f"{abort_prefix(bank)}{txn_id}"


def _stands(responses):
    """The outcome that stands from the reads of a transaction's failure branch."""
    values = [kv.value.decode() for r in responses for kv in r.response_range.kvs]
    decided = responses[0].response_range.kvs
    if decided:
        return decided[0].value.decode()
    return ABORT if values else None


async def decide(etcd, txn_id, outcome, banks=(), timeout=5.0):
    """The coordinator: record `outcome` unless one exists; return the outcome that stands.

    A COMMIT also requires that none of the participating `banks` has recorded its abort."""
    kv = etcd.kv
    watched = [key(txn_id)] + ([abort_key(b, txn_id) for b in banks] if outcome == COMMIT else [])
    answer = await kv.txn(compare=[kv.txn_compare_create_revision(k, 0) for k in watched],
                          success=[kv.txn_op_put(key(txn_id), outcome)],
                          failure=[kv.txn_op_get(k) for k in watched], timeout=timeout)
    if answer.succeeded:
        return outcome
    return _stands(answer.responses)


async def abort_as_bank(etcd, bank, txn_id, timeout=5.0):
    """A participant: record its own ABORT unless the coordinator decided; the outcome that stands."""
    kv = etcd.kv
    answer = await kv.txn(compare=[kv.txn_compare_create_revision(key(txn_id), 0)],
                          success=[kv.txn_op_put(abort_key(bank, txn_id), ABORT)],
                          failure=[kv.txn_op_get(key(txn_id))], timeout=timeout)
    if answer.succeeded:
        return ABORT
    return _stands(answer.responses)


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
    """decide() for several (txn_id, outcome, banks) in one etcd transaction; the outcomes that stand.

    All-or-nothing in etcd: if any of them was decided already (a bank's resolver was first),
    none is written and each is settled on its own.
    """
    kv = etcd.kv
    compare = []
    for txn_id, outcome, banks in items:
        compare.append(kv.txn_compare_create_revision(key(txn_id), 0))
        if outcome == COMMIT:
            compare.extend(kv.txn_compare_create_revision(abort_key(b, txn_id), 0) for b in banks)
    answer = await kv.txn(compare=compare, success=[kv.txn_op_put(key(t), outcome) for t, outcome, _ in items],
                          timeout=timeout)
    if answer.succeeded:
        return [outcome for _, outcome, _ in items]
    return [await decide(etcd, t, outcome, banks, timeout) for t, outcome, banks in items]
