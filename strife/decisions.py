"""The commit decision of a transaction, recorded once in etcd: `/strife/txn/<id>/decision`.

Whoever writes first wins (create_revision == 0); everyone else obeys what is there. No lease:
a decision must outlive every process that could ask about it.
"""
COMMIT, ABORT = "COMMIT", "ABORT"
PREFIX = "/strife/txn/"


def key(txn_id):
    return f"{PREFIX}{txn_id}/decision"


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
