"""The one vocabulary (strife/core/outcomes.py): it mirrors the protos number for number, and the
one table of gRPC codes decides alike for the CLI and for the outbox's delivery."""
import asyncio

import grpc
import pytest

from strife.client import delivery
from strife.client.outbox import Outbox
from strife.core.outcomes import AbortReason, NoReason, Outcome, Refusal, refusal
from strife.rpc import cl_gw_pb2 as cl, gw_bank_pb2 as gb


@pytest.mark.parametrize("ours, theirs, unspecified", [
    (Outcome, cl.Outcome, "OUTCOME_UNSPECIFIED"), (AbortReason, cl.AbortReason, "REASON_UNSPECIFIED"),
    (NoReason, gb.NoReason, "NO_REASON_UNSPECIFIED")])
def test_the_vocabulary_mirrors_the_protos(ours, theirs, unspecified):
    on_the_wire = {member: member.number for member in ours if member.number is not None}
    expected = {name: number for name, number in theirs.items() if name != unspecified}
    assert {m.value: n for m, n in on_the_wire.items() if n} == expected
    assert all(m.value == "" for m, n in on_the_wire.items() if n == 0)  # "no reason" is written as nothing
    for member, number in on_the_wire.items():
        assert ours.of_number(number) is member


def test_members_are_their_names_on_disk_and_in_json():
    assert Outcome.COMMITTED == "COMMITTED" and f"{Outcome.ABORTED}" == "ABORTED"
    assert AbortReason("") is AbortReason.NONE and AbortReason.INSUFFICIENT_FUNDS.word == "insufficient_funds"
    assert Outcome.REJECTED.number is None  # never on the wire
    assert NoReason.CONFLICT.for_the_payer() is AbortReason.REFUSED
    assert NoReason.INSUFFICIENT_FUNDS.for_the_payer() is AbortReason.INSUFFICIENT_FUNDS


@pytest.mark.parametrize("code, meaning", [
    (grpc.StatusCode.INVALID_ARGUMENT, Refusal.REQUEST), (grpc.StatusCode.NOT_FOUND, Refusal.REQUEST),
    (grpc.StatusCode.ALREADY_EXISTS, Refusal.REQUEST), (grpc.StatusCode.PERMISSION_DENIED, Refusal.REQUEST),
    (grpc.StatusCode.FAILED_PRECONDITION, Refusal.REQUEST), (grpc.StatusCode.UNAUTHENTICATED, Refusal.CREDENTIALS),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, Refusal.BUSY), (grpc.StatusCode.UNAVAILABLE, Refusal.UNREACHABLE),
    (grpc.StatusCode.DEADLINE_EXCEEDED, Refusal.UNREACHABLE), (grpc.StatusCode.INTERNAL, Refusal.OTHER)])
def test_one_table_of_grpc_codes(code, meaning):
    assert refusal(code) is meaning


class Refusing:
    """A gateway that answers every payment with one gRPC error."""

    def __init__(self, code):
        self.code = code

    async def pay(self, payee, amount_minor, txn_id, timeout=None):
        raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), f"said {self.code.name}")


@pytest.mark.parametrize("code, settled", [
    (grpc.StatusCode.NOT_FOUND, True),
    (grpc.StatusCode.UNAUTHENTICATED, False),  # the sender's credentials, not the payment: it waits, saying why
    (grpc.StatusCode.RESOURCE_EXHAUSTED, False),  # a login lockout: the payment waits, it is not dropped
    (grpc.StatusCode.UNAVAILABLE, False), (grpc.StatusCode.INTERNAL, False)])
def test_delivery_settles_a_final_refusal_and_keeps_the_rest_queued(tmp_path, code, settled):
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.add("t1", "bob", 100)
    entry = asyncio.run(delivery.attempt(outbox, Refusing(code)))
    assert entry.pending is not settled
    if settled:
        assert entry.outcome is Outcome.REJECTED and (entry.status, entry.reason) == ("ABORTED", "REJECTED")
    else:
        assert entry.outcome is None and entry.attempts == 1 and entry.next_attempt_at > 0
    outbox.close()
