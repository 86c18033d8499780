"""The commit decision of a transaction, recorded once in etcd: `/strife/txn/<id>/decision`.

Whoever writes first wins (create_revision == 0); everyone else obeys what is there. No lease:
a decision must outlive every process that could ask about it.
"""
from etcd3aio import prefix_range_end

COMMIT, ABORT = "COMMIT", "ABORT"
PREFIX = "/strife/txn/"
SUFFIX = "/decision"
PAGE = 5000  # keys per read: a deployment holds one key per payment ever made, far past gRPC's 4 MB


def key(txn_id):
    return f"{PREFIX}{txn_id}{SUFFIX}"


async def decide(etcd, txn_id, outcome, timeout=5.0):
    """Record `outcome` unless a decision exists; return the decision that stands."""
    k = key(txn_id)
    kv = etcd.kv
    answer = await kv.txn(
        compare=[kv.txn_compare_create_revision(k, 0)],
        success=[kv.txn_op_put(k, outcome)],
        failure=[kv.txn_op_get(k)],
        timeout=timeout)
    if answer.succeeded:
        return outcome
    return answer.responses[0].response_range.kvs[0].value.decode()


async def read(etcd, txn_id, timeout=5.0):
    """The recorded decision, or None."""
    answer = await etcd.kv.get(key(txn_id), timeout=timeout)
    return answer.kvs[0].value.decode() if answer.kvs else None


async def read_all(etcd, timeout=10.0):
    """{txn_id: decision} of every recorded decision, read page by page at one revision."""
    decided, start, end, revision = {}, PREFIX.encode(), prefix_range_end(PREFIX), 0
    while True:
        answer = await etcd.kv.get(start, range_end=end, revision=revision, limit=PAGE, timeout=timeout)
        revision = revision or answer.header.revision  # later pages see the same snapshot
        for kv in answer.kvs:
            name = kv.key.decode()
            if name.endswith(SUFFIX):
                decided[name[len(PREFIX):-len(SUFFIX)]] = kv.value.decode()
        if not answer.more or not answer.kvs:
            return decided
        start = answer.kvs[-1].key + b"\0"


async def decide_many(etcd, items, timeout=5.0):
    """decide() for several (txn_id, outcome) pairs in one etcd transaction; the decisions that stand.

    All-or-nothing in etcd: if any of them was decided already (a bank's resolver was first),
    none is written and each is settled on its own.
    """
    kv = etcd.kv
    answer = await kv.txn(compare=[kv.txn_compare_create_revision(key(t), 0) for t, _ in items],
                          success=[kv.txn_op_put(key(t), outcome) for t, outcome in items],
                          timeout=timeout)
    if answer.succeeded:
        return [outcome for _, outcome in items]
    return [await decide(etcd, t, outcome, timeout) for t, outcome in items]
