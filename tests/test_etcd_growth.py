"""etcd stays bounded: decisions are forgotten once every bank applied them, and the space that
compaction frees is given back by defragmentation.

One deployment for the module that forgets within seconds (idempotency_retention 3s, where the
shared `live` keeps records 30 s). The audit between the two steps of forgetting runs on `live`:
it needs the gateway not to take its own two steps while the audit reads."""
import asyncio
import json
import sqlite3

from etcd3aio import prefix_range_end

from strife.checks import audit
from strife.core import decisions
from strife.deployment import discovery, identities
from strife.deployment.layout import Layout
from strife.deployment.topology import load_deployment
from strife.launcher import etcd_upkeep
import pytest

from tests.helpers import PAYMENT_TOPOLOGY, etcd_as, ledger_rows, wait_for, started

RETENTION = "3s"


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory):
    topology = PAYMENT_TOPOLOGY.replace("idempotency_retention: 30s", f"idempotency_retention: {RETENTION}")
    assert topology != PAYMENT_TOPOLOGY
    with started(tmp_path_factory, "forgetful", topology) as d:
        yield d


def etcd_keys(home, prefix):
    async def read(etcd):
        answer = await etcd.kv.get(prefix, range_end=prefix_range_end(prefix))
        return {kv.key.decode(): kv.value.decode() for kv in answer.kvs}
    return etcd_as(home, read)


def test_a_decision_is_forgotten_after_both_banks_applied_it_and_retries_still_answer(forgetful):
    d = forgetful
    paid = json.loads(d.cli("client", "alice", "pay", "bob", "2", "--json").stdout)
    refused = json.loads(d.cli("client", "bob", "pay", "alice", "999", "--json").stdout)
    assert (paid["outcome"], refused["outcome"]) == ("committed", "aborted")
    for answer in (paid, refused):
        assert decisions.key(answer["txn_id"]) in etcd_keys(d.home, decisions.PREFIX)
    ours = {key for answer in (paid, refused) for key in (decisions.key(answer["txn_id"]),
                                                           decisions.answer_key(answer["txn_id"]))}
    wait_for(lambda: not ours & set(etcd_keys(d.home, decisions.PREFIX)), timeout=60,
             what="decisions and answers forgotten")
    assert ledger_rows(d.home, "bank1", "SELECT state FROM holds WHERE txn_id = ?", (paid["txn_id"],)) == [("COMMITTED",)]
    again = json.loads(d.cli("client", "alice", "pay", "bob", "2", "--id", paid["txn_id"], "--json").stdout)
    assert (again["outcome"], again["reason"]) == ("committed", "")
    again = json.loads(d.cli("client", "bob", "pay", "alice", "999", "--id", refused["txn_id"], "--json").stdout)
    assert (again["outcome"], again["reason"], again["detail"]) == ("aborted", refused["reason"], refused["detail"])
    verify = d.cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_audit_between_the_two_steps_of_forgetting_finds_nothing_wrong(live):
    """The gateway forgets a decision in two steps: the delete in etcd, then its own row marked
    forgotten. An audit that reads etcd between the two still sees a commit with its answer."""
    d = live
    topology = load_deployment(d.home)
    paid = json.loads(d.cli("client", "alice", "pay", "bob", "1", "--json").stdout)
    assert paid["outcome"] == "committed"
    store = Layout(d.home).gateway_db(topology.of_kind("gateway")[0].name)

    def row():
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            return db.execute("SELECT phase2_done, forgotten FROM payments WHERE txn_id = ?", (paid["txn_id"],)).fetchone()
        finally:
            db.close()
    wait_for(lambda: row() == (1, 0), what="phase 2 acknowledged by both banks")
    # the gateway's first step, taken here before its own (it waits FORGET_AFTER): the row still says
    # not forgotten, as it does for a moment when the gateway deletes the decision itself
    etcd_as(d.home, lambda etcd: decisions.forget(etcd, [(paid["txn_id"], ("bank1", "bank2"))]))
    report = audit.audit(topology)
    assert report.ok, report.problems


def test_defragmentation_gives_back_what_compaction_freed(forgetful):
    t = load_deployment(forgetful.home)
    member = t.of_kind("etcd")[0]

    async def churn_and_compact():
        async with discovery.client(t, identities.OPERATOR) as etcd:
            blob = "x" * 10_000
            for i in range(0, 1500, 50):  # ~15 MB written, then deleted and compacted away
                await asyncio.gather(*(etcd.kv.put(f"/strife/test/{j}", blob) for j in range(i, i + 50)))
            await etcd.kv.delete("/strife/test/", range_end=prefix_range_end("/strife/test/"))
            revision = (await etcd.kv.get("/strife/none")).header.revision
            await etcd.kv.compact(revision, physical=True)
            return (await etcd.maintenance.status()).dbSize

    before = asyncio.run(churn_and_compact())
    assert asyncio.run(etcd_upkeep.check_member(t, member, min_free=2 ** 30)) == 0  # not worth a pause
    freed = asyncio.run(etcd_upkeep.check_member(t, member, min_free=2 ** 20))
    assert freed > 5 * 2 ** 20 and freed < before
