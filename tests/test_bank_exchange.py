"""The bank's batched `Exchange` call, spoken to directly with the gateway's certificate: commits,
aborts and prepares in one round trip, each answered in order and applied to the real ledger."""
import asyncio
import uuid

import grpc
import pytest

from strife.core import decisions
from strife.deployment import tls
from strife.deployment.topology import load_deployment
from strife.rpc import gw_bank_pb2 as gb, gw_bank_pb2_grpc
from tests.helpers import balances, etcd_as, ledger_rows


def bank_call(home, method, request, identity="gateway"):
    address = load_deployment(home).node("bank1").address

    async def go():
        async with grpc.aio.secure_channel(address, tls.channel_credentials(home, identity)) as channel:
            return await getattr(gw_bank_pb2_grpc.BankStub(channel), method)(request, timeout=10)
    return asyncio.run(go())


def exchange(home, request, identity="gateway"):
    return bank_call(home, "Exchange", request, identity)


def leg(txn_id, account, cents, direction):
    return gb.Leg(txn_id=txn_id, account=account, amount_minor=cents, direction=direction)


def hold_states(home, txn_id):
    return sorted(ledger_rows(home, "bank1", "SELECT direction, state FROM holds WHERE txn_id = ?", (txn_id,)))


def test_one_exchange_commits_aborts_and_prepares(live):
    d, x = live, uuid.uuid4().hex[:8]  # the shared deployment; transaction ids of this test's own
    before = balances(d.home)
    # t1: alice pays carol 1.25 (both at bank1); prepared alone first
    first = exchange(d.home, gb.ExchangeRequest(prepare=[leg(f"{x}-t1", "alice", 125, gb.DEBIT),
                                                         leg(f"{x}-t1", "carol", 125, gb.CREDIT)]))
    assert [v.vote for v in first.votes] == [gb.YES, gb.YES] and not first.commits and not first.aborts
    assert hold_states(d.home, f"{x}-t1") == [("CREDIT", "PREPARED"), ("DEBIT", "PREPARED")]

    # a gateway commits only what etcd records as COMMIT: so does this test (the audit checks it)
    assert etcd_as(d.home, lambda etcd: decisions.decide(etcd, f"{x}-t1", decisions.COMMIT, banks=["bank1"])) \
        == decisions.Standing(decisions.COMMIT)

    # then, in one call: commit t1, abort t2 (never seen here), prepare t3 and a leg that cannot pay
    second = exchange(d.home, gb.ExchangeRequest(
        commit=[f"{x}-t1"], abort=[f"{x}-t2"],
        prepare=[leg(f"{x}-t3", "alice", 300, gb.DEBIT), leg(f"{x}-t4", "carol", 10 ** 9, gb.DEBIT)]))
    assert [r.state for r in second.commits] == [gb.COMMITTED]
    assert [r.state for r in second.aborts] == [gb.ABORTED]
    assert [v.vote for v in second.votes] == [gb.YES, gb.NO]
    assert second.votes[1].reason == gb.INSUFFICIENT_FUNDS
    assert hold_states(d.home, f"{x}-t1") == [("CREDIT", "COMMITTED"), ("DEBIT", "COMMITTED")]
    assert hold_states(d.home, f"{x}-t3") == [("DEBIT", "PREPARED")]
    assert ledger_rows(d.home, "bank1", "SELECT outcome FROM outcomes WHERE txn_id = ?", (f"{x}-t2",)) == [("ABORTED",)]
    after = balances(d.home)
    assert after["alice"] == before["alice"] - 125 and after["carol"] == before["carol"] + 125

    # a decision the bank cannot take is answered for that transaction alone
    third = exchange(d.home, gb.ExchangeRequest(commit=[f"{x}-t2"], abort=[f"{x}-t3"]))
    assert third.commits[0].error and "aborted" in third.commits[0].error
    assert [r.state for r in third.aborts] == [gb.ABORTED]
    assert hold_states(d.home, f"{x}-t3") == [("DEBIT", "ABORTED")]

    # one phase for one bank: transfers travel in the same call and are answered in order
    transfers = exchange(d.home, gb.ExchangeRequest(transfer=[
        gb.Transfer(txn_id=f"{x}-t6", payer="alice", payee="carol", amount_minor=200),
        gb.Transfer(txn_id=f"{x}-t7", payer="carol", payee="alice", amount_minor=10 ** 9),
        gb.Transfer(txn_id=f"{x}-t1", payer="alice", payee="carol", amount_minor=1)]))
    assert [r.state for r in transfers.transfers] == [gb.COMMITTED, gb.ABORTED, gb.ABORTED]
    assert [r.reason for r in transfers.transfers[1:]] == [gb.INSUFFICIENT_FUNDS, gb.CONFLICT]
    moved = balances(d.home)
    assert moved["alice"] == after["alice"] - 200 and moved["carol"] == after["carol"] + 200
    again = exchange(d.home, gb.ExchangeRequest(transfer=[gb.Transfer(txn_id=f"{x}-t6", payer="alice", payee="carol",
                                                                      amount_minor=200)]))
    assert again.transfers[0].state == gb.COMMITTED and balances(d.home) == moved  # answered, not applied twice

    # the single-kind calls the design names take the same paths
    votes = bank_call(d.home, "LockTransaction", gb.LockTransactionRequest(legs=[leg(f"{x}-t5", "alice", 50, gb.DEBIT)]))
    assert [v.vote for v in votes.votes] == [gb.YES]
    aborted = bank_call(d.home, "AbortTransaction", gb.DecisionRequest(txn_ids=[f"{x}-t5"]))
    assert [r.state for r in aborted.results] == [gb.ABORTED]
    assert hold_states(d.home, f"{x}-t5") == [("DEBIT", "ABORTED")]
    refused = bank_call(d.home, "InitiateTransaction", gb.DecisionRequest(txn_ids=[f"{x}-t5"]))
    assert refused.results[0].error and balances(d.home)["alice"] == moved["alice"]

    # the deployment is shared: what this test did as the gateway must still pass the audit
    audit = d.run("verify")
    assert audit.returncode == 0, audit.stdout


def test_bad_exchanges_are_refused(live):
    d, x = live, uuid.uuid4().hex[:8]
    with pytest.raises(grpc.RpcError) as empty:
        exchange(d.home, gb.ExchangeRequest())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as bad_leg:
        exchange(d.home, gb.ExchangeRequest(commit=[f"{x}-t1"], prepare=[leg(f"{x}-t1", "alice", -5, gb.DEBIT)]))
    assert bad_leg.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ledger_rows(d.home, "bank1", "SELECT COUNT(*) FROM outcomes WHERE txn_id = ?",
                       (f"{x}-t1",)) == [(0,)]  # nothing half-applied
    with pytest.raises(grpc.RpcError) as client:
        exchange(d.home, gb.ExchangeRequest(abort=[f"{x}-t1"]), identity="alice")
    assert client.value.code() == grpc.StatusCode.UNAVAILABLE  # a user's certificate fails the handshake
    with pytest.raises(grpc.RpcError) as operator:
        exchange(d.home, gb.ExchangeRequest(abort=[f"{x}-t1"]), identity="operator")
    assert operator.value.code() == grpc.StatusCode.PERMISSION_DENIED  # infrastructure, but not the gateway



class _Context:
    async def abort(self, code, details):
        raise AssertionError(f"refused: {code} {details}")


def test_one_exchange_is_one_ledger_commit_with_one_fsync(tmp_path):
    """Commit, prepares and a transfer of one call: one transaction, fsynced once (votes and the
    transfer wait for the disk), with no thread hop; a commit alone is not fsynced before it is
    acknowledged."""
    from strife.core.failpoints import Failpoints
    from strife.nodes.bank.ledger import Ledger
    from strife.nodes.bank.service import BankService

    async def main():
        ledger = Ledger(tmp_path / "ledger.db")
        for account in ("alice", "carol"):
            ledger.open_account_now(account, 1000)
        ledger.start()

        async def settle(account):
            pass
        bank = BankService(ledger, Failpoints(), settle)
        try:
            first = await bank.Exchange(gb.ExchangeRequest(prepare=[leg("t1", "alice", 100, gb.DEBIT)]), _Context())
            before = (ledger.writer.commits, ledger.writer.durable_commits)
            mixed = await bank.Exchange(gb.ExchangeRequest(
                commit=["t1"], prepare=[leg("t2", "alice", 50, gb.DEBIT), leg("t3", "carol", 10 ** 6, gb.DEBIT)],
                transfer=[gb.Transfer(txn_id="t4", payer="carol", payee="alice", amount_minor=5)]), _Context())
            after_mixed = (ledger.writer.commits, ledger.writer.durable_commits)
            await bank.Exchange(gb.ExchangeRequest(commit=["t2"]), _Context())
            after_commit = (ledger.writer.commits, ledger.writer.durable_commits)
            return first, before, mixed, after_mixed, after_commit, ledger.account("alice")
        finally:
            await ledger.close()

    first, before, mixed, after_mixed, after_commit, alice = asyncio.run(main())
    assert [v.vote for v in first.votes] == [gb.YES]
    assert [r.state for r in mixed.commits] == [gb.COMMITTED]
    assert [v.vote for v in mixed.votes] == [gb.YES, gb.NO] and mixed.votes[1].reason == gb.INSUFFICIENT_FUNDS
    assert [t.state for t in mixed.transfers] == [gb.COMMITTED]
    assert after_mixed == (before[0] + 1, before[1] + 1)       # the whole call: one durable commit
    assert after_commit == (after_mixed[0] + 1, after_mixed[1])  # phase 2 alone: committed, not fsynced
    assert alice == (1000 - 100 + 5 - 50, 1000 - 100 + 5 - 50, "")


def exchanges(home, requests, identity="gateway", raw=()):
    """(answers, status) of one `Exchanges` stream to bank1 that carries `raw` (bytes that are no
    message) and then `requests` (numbered 1, 2, ...), closed once every request was answered."""
    address = load_deployment(home).node("bank1").address

    async def go():
        async with grpc.aio.secure_channel(address, tls.channel_credentials(home, identity)) as channel:
            call = channel.stream_stream(
                "/strife.gwbank.Bank/Exchanges",
                request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
                response_deserializer=gb.ExchangeResponse.FromString)(timeout=10)
            answers = []
            try:
                for message in raw:
                    await call.write(message)
                for number, request in enumerate(requests, 1):
                    request.sequence = number
                    await call.write(request)
                while len(answers) < len(requests):
                    answer = await call.read()
                    if answer is grpc.aio.EOF:
                        break
                    answers.append(answer)
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the bank ended the stream: its status says why
            return answers, await call.code()
    return asyncio.run(go())


def test_exchanges_on_one_stream_are_answered_each_with_its_sequence(live):
    """The gateway's long-lived stream: each exchange applied as its own Exchange call would be,
    answered with its sequence; one the bank refuses fails alone (its status in its answer), the
    stream goes on; and the call log has a line per exchange."""
    d, x = live, uuid.uuid4().hex[:8]
    before = balances(d.home)
    answers, code = exchanges(d.home, [
        gb.ExchangeRequest(prepare=[leg(f"{x}-s1", "alice", 40, gb.DEBIT)]),
        gb.ExchangeRequest(),  # empty: refused as an Exchange call would be
        gb.ExchangeRequest(transfer=[gb.Transfer(txn_id=f"{x}-s2", payer="alice", payee="carol", amount_minor=7)]),
        gb.ExchangeRequest(abort=[f"{x}-s1"], prepare=[leg(f"{x}-s3", "alice", -1, gb.DEBIT)]),  # a bad leg
        gb.ExchangeRequest(abort=[f"{x}-s1"])])
    assert code == grpc.StatusCode.OK
    by_sequence = {a.sequence: a for a in answers}
    assert sorted(by_sequence) == [1, 2, 3, 4, 5]
    assert [v.vote for v in by_sequence[1].votes] == [gb.YES] and by_sequence[1].status == 0
    assert by_sequence[2].status == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "empty" in by_sequence[2].status_detail
    assert [t.state for t in by_sequence[3].transfers] == [gb.COMMITTED]
    assert by_sequence[4].status == grpc.StatusCode.INVALID_ARGUMENT.value[0] and not by_sequence[4].aborts
    assert [r.state for r in by_sequence[5].aborts] == [gb.ABORTED]
    assert hold_states(d.home, f"{x}-s1") == [("DEBIT", "ABORTED")]   # the bad leg's abort was not applied with it
    assert hold_states(d.home, f"{x}-s3") == []
    after = balances(d.home)
    assert after["alice"] == before["alice"] - 7 and after["carol"] == before["carol"] + 7

    lines = [line for line in (d.home / "logs" / "bank1.log").read_text().splitlines()
             if "method=Exchanges" in line and x in line]
    assert len(lines) == 4, lines  # the empty one names no transaction
    assert any(f"transfer={x}-s2:alice:carol:7" in line and "code=OK" in line for line in lines), lines
    assert any(f"transfer={x}-s2" not in line and "code=INVALID_ARGUMENT" in line and f"abort={x}-s1" in line
               for line in lines), lines
    audit = d.run("verify")
    assert audit.returncode == 0, audit.stdout


def test_exchanges_are_for_the_gateway_alone_and_bytes_that_are_no_message_end_the_stream(live):
    d, x = live, uuid.uuid4().hex[:8]
    answers, code = exchanges(d.home, [gb.ExchangeRequest(abort=[f"{x}-t1"])], identity="operator")
    assert (answers, code) == ([], grpc.StatusCode.PERMISSION_DENIED)
    answers, code = exchanges(d.home, [], raw=[b"\xff\xff\xff"])
    assert (answers, code) == ([], grpc.StatusCode.INVALID_ARGUMENT)
    assert ledger_rows(d.home, "bank1", "SELECT COUNT(*) FROM outcomes WHERE txn_id = ?", (f"{x}-t1",)) == [(0,)]
    answers, code = exchanges(d.home, [gb.ExchangeRequest(abort=[f"{x}-t1"])])  # the bank goes on
    assert code == grpc.StatusCode.OK and [r.state for r in answers[0].aborts] == [gb.ABORTED]
