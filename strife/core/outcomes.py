"""The one vocabulary for what became of a payment, and for what a gRPC status code means.

`Outcome`, `AbortReason` and the banks' `NoReason` mirror the enums of cl_gw.proto and
gw_bank.proto: each member is its name (how it is written in databases, in etcd and in JSON) and
carries the proto's number (`.number`, how it travels). tests/test_outcomes.py holds them against
the generated code, so a value added to a proto without its twin here fails a test.
"""
from __future__ import annotations

import enum
from typing import Any, Self


class _Named(enum.StrEnum):
    """A member whose text is its name and whose `number` is the proto's (None: never on the wire)."""

    number: Any  # the proto's int, or None; Any because protobuf's stubs type each enum field as its own wrapper

    def __new__(cls, text: str, number: int | None = None):
        member = str.__new__(cls, text)
        member._value_ = text
        member.number = number
        return member

    @classmethod
    def of_number(cls, number: int) -> Self:
        for member in cls:
            if member.number == number:
                return member
        raise ValueError(f"{number} is not a {cls.__name__} on the wire")

    @property
    def word(self) -> str:
        """How people are shown it: `insufficient_funds`."""
        return self.value.lower()


class Outcome(_Named):
    COMMITTED = "COMMITTED", 1
    ABORTED = "ABORTED", 2
    IN_PROGRESS = "IN_PROGRESS", 3  # the gateway has no final answer yet: ask again with the same id
    # Never on the wire: the gateway refused the request itself (unknown payee, bad amount, a
    # wrong password), so nothing happened and asking again changes nothing.
    REJECTED = "REJECTED"


class AbortReason(_Named):
    NONE = "", 0  # cl_gw.proto's REASON_UNSPECIFIED: nothing was aborted
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS", 1
    BANK_UNAVAILABLE = "BANK_UNAVAILABLE", 2  # a bank is not registered or did not vote within prepare_timeout
    ACCOUNT_UNKNOWN = "ACCOUNT_UNKNOWN", 3    # a bank does not hold the account
    REFUSED = "REFUSED", 4                    # a bank voted no for another reason (the detail says why)
    RECOVERED_ABORT = "RECOVERED_ABORT", 5    # decided ABORT by recovery (gateway restart, in-doubt resolution)


class NoReason(_Named):
    """Why a bank votes NO or does not apply a transfer (gw_bank.proto)."""
    NONE = "", 0
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS", 1
    ACCOUNT_UNKNOWN = "ACCOUNT_UNKNOWN", 2
    ALREADY_DECIDED = "ALREADY_DECIDED", 3  # this bank already aborted the transaction
    CONFLICT = "CONFLICT", 4                # the id was used with other terms

    def for_the_payer(self) -> AbortReason:
        """What the gateway tells the payer when a bank says no for this reason."""
        return _FOR_THE_PAYER.get(self, AbortReason.REFUSED)


_FOR_THE_PAYER = {NoReason.INSUFFICIENT_FUNDS: AbortReason.INSUFFICIENT_FUNDS,
                  NoReason.ACCOUNT_UNKNOWN: AbortReason.ACCOUNT_UNKNOWN}


class Refusal(enum.Enum):
    """What a gRPC error from the gateway means to whoever sent the request."""
    REQUEST = "the request is wrong"        # final: the same request is refused again
    CREDENTIALS = "credentials"            # final: who asks is not accepted (certificate, user, password)
    BUSY = "try later"                     # retryable: overloaded, or locked out for a while (login limits)
    UNREACHABLE = "unreachable"            # retryable: no answer (the gateway is away or starting)
    OTHER = "failed"                       # retryable: anything else (an internal error)

    @property
    def final(self) -> bool:
        """Whether asking again, with the same id, can change the answer."""
        return self in (Refusal.REQUEST, Refusal.CREDENTIALS)


# The one table of gRPC status codes, by name (grpc.StatusCode.X.name). A lockout is BUSY: a
# payment waiting in an outbox stays queued through it, it is not dropped.
CODES = {
    "INVALID_ARGUMENT": Refusal.REQUEST, "NOT_FOUND": Refusal.REQUEST, "ALREADY_EXISTS": Refusal.REQUEST,
    "PERMISSION_DENIED": Refusal.REQUEST, "FAILED_PRECONDITION": Refusal.REQUEST,
    "UNAUTHENTICATED": Refusal.CREDENTIALS,
    "RESOURCE_EXHAUSTED": Refusal.BUSY,
    "UNAVAILABLE": Refusal.UNREACHABLE, "DEADLINE_EXCEEDED": Refusal.UNREACHABLE,
}


def refusal(code) -> Refusal:
    """What a grpc.StatusCode means (anything with a `name`)."""
    return CODES.get(getattr(code, "name", str(code)), Refusal.OTHER)
