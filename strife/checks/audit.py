"""The audit behind `strife verify`: read every bank's ledger and the decision records, and check
what must always hold.

- money is conserved: the sum of balances (plus money in transit between the two commits of a
  cross-bank payment) equals every deposit ever made (opening balances, registrations);
- no balance is negative;
- every transaction agrees with its decision in etcd: COMMIT applied on both sides (one debit,
  one credit, same amount), nothing committed without a COMMIT decision;
- the gateway acknowledged no commit that etcd does not record (or forgot, once both banks applied it);
- no hold is still PREPARED after the hold timeout;
- the etcd members, when there are several, hold the same data (etcd_agreement.py).

Each ledger is read in one read transaction, so a live system can be audited too.
"""
import asyncio
import collections
import dataclasses
import time

from strife.checks import etcd_agreement
from strife.core import decisions
from strife.core.money import format_minor
from strife.core.outcomes import Outcome
from strife.deployment import discovery
from strife.deployment.identities import OPERATOR
from strife.deployment.layout import Layout
from strife.nodes.bank import ledger
from strife.nodes.gateway import store


@dataclasses.dataclass
class Report:
    ok: bool
    problems: list
    banks: dict          # bank -> {"accounts": n, "balance_minor": total, "deposits_minor": total}
    total_minor: int
    deposits_minor: int
    in_transit_minor: int
    transactions: dict   # committed / aborted / prepared / decided counts
    etcd_agreement: dict = dataclasses.field(default_factory=dict)  # revision, compared, left_out

    def to_dict(self):
        return dataclasses.asdict(self)


def _gateway_commits(home, topology, decided_before):
    """{txn_id: (same bank?, phase 2 done everywhere?)} of every commit a gateway acknowledged
    before the audit began. Read after etcd: a decision found deleted there is then always seen as
    finished here. A gateway records a commit only once the bank's transfer or the decision in etcd
    is durable, so what it recorded before the audit began is in the audit's earlier reads (a later
    payment is left to a later audit)."""
    found = {}
    for gateway in topology.of_kind("gateway"):
        path = Layout(home).gateway_db(gateway.name)
        if path.exists():  # with several gateways, one may have finished what another also answered
            for txn, (same_bank, finished) in store.acknowledged_commits(path, decided_before).items():
                found[txn] = (same_bank, finished or found.get(txn, (same_bank, False))[1])
    return found


async def _decisions(topology):
    async with discovery.client(topology, OPERATOR) as etcd:
        return await decisions.read_records(etcd)


def audit(topology):
    return asyncio.run(audit_async(topology))


async def audit_async(topology):
    now = time.time()
    home = topology.home
    hold_timeout = topology.settings.hold_timeout
    problems, banks = [], {}
    total = deposits = 0
    legs = collections.defaultdict(list)  # txn -> [(bank, Hold)]
    transfers = {}                        # same-bank payments: txn -> outcome
    for bank in topology.of_kind("bank"):
        path = Layout(home).ledger(bank.name)
        if not path.exists():
            problems.append(f"{bank.name}: no ledger at {path}")
            continue
        read = ledger.snapshot(path)
        accounts, bank_deposits = read.accounts, read.deposits_minor
        transfers.update(read.transfers)
        balance = sum(b for _, b in accounts)
        banks[bank.name] = {"accounts": len(accounts), "balance_minor": balance, "deposits_minor": bank_deposits}
        total += balance
        deposits += bank_deposits
        for name, b in accounts:
            if b < 0:
                problems.append(f"{bank.name}: account {name} is negative ({format_minor(b)})")
        for hold in read.holds:
            legs[hold.txn_id].append((bank.name, hold))

    records = await _decisions(topology)
    agreement = await etcd_agreement.check(topology)
    problems.extend(agreement.problems)
    recorded = {txn: record.outcome for txn, record in records.items()}
    for txn, record in records.items():
        if record.decision == decisions.COMMIT and record.aborted_by:
            problems.append(f"txn {txn}: etcd records COMMIT and an abort by {', '.join(record.aborted_by)}")
    acknowledged = _gateway_commits(home, topology, decided_before=now)
    in_transit = 0
    counts = collections.Counter()
    for txn, sides in legs.items():
        decision = recorded.get(txn)
        states = {hold.state for _, hold in sides}
        debits = [hold for _, hold in sides if hold.direction == "DEBIT"]
        credits = [hold for _, hold in sides if hold.direction == "CREDIT"]
        # a decision is deleted from etcd once both sides applied it and the gateway keeps the answer
        may_be_forgotten = decision is None and acknowledged.get(txn) == (False, True)
        if ledger.COMMITTED in states:
            if decision != decisions.COMMIT and not (may_be_forgotten and states == {ledger.COMMITTED}):
                problems.append(f"txn {txn}: committed at {_where(sides, 'COMMITTED')} but etcd records "
                                f"{decision or 'no decision'}")
            if len(debits) != 1 or len(credits) != 1 or debits[0].amount_minor != credits[0].amount_minor:
                problems.append(f"txn {txn}: a commit needs one debit and one credit of the same amount, found "
                                + ", ".join(f"{hold.direction} {format_minor(hold.amount_minor)} at {bank}"
                                            for bank, hold in sides))
        if decision == decisions.COMMIT and ledger.ABORTED in states:
            problems.append(f"txn {txn}: etcd records COMMIT but {_where(sides, 'ABORTED')} aborted it")
        for bank, (_, direction, account, amount, state, created) in sides:
            if state == ledger.PREPARED:
                age = now - created
                if age > hold_timeout * 2:  # the resolver runs every hold_timeout/4; leave it room
                    problems.append(f"txn {txn}: {direction} hold of {format_minor(amount)} on {account} at {bank} "
                                    f"still PREPARED after {age:.0f}s (hold timeout {hold_timeout:g}s)")
                if decision == decisions.COMMIT and ledger.COMMITTED in states:
                    in_transit += amount if direction == "CREDIT" else -amount
        counts["committed" if states == {ledger.COMMITTED} else "aborted" if states == {ledger.ABORTED}
               else "in_flight"] += 1
    for txn, (same_bank, finished) in sorted(acknowledged.items()):
        if same_bank:
            if transfers.get(txn) != ledger.COMMITTED:
                problems.append(f"txn {txn}: the gateway acknowledged a same-bank commit that the bank records as "
                                f"{Outcome(transfers[txn]).word if txn in transfers else 'unknown'}")
        elif finished and txn not in recorded:  # forgotten, or being forgotten
            if {hold.state for _, hold in legs.get(txn, ())} != {ledger.COMMITTED}:
                problems.append(f"txn {txn}: the gateway acknowledged a commit whose decision is forgotten, but the "
                                f"banks have not applied it on both sides")
        elif recorded.get(txn) != decisions.COMMIT:
            problems.append(f"txn {txn}: the gateway acknowledged a commit that etcd records as "
                            f"{recorded.get(txn) or 'undecided'}")
    for outcome in transfers.values():
        counts[f"same_bank_{Outcome(outcome).word}"] += 1
    if total + in_transit != deposits:
        problems.append(f"money not conserved: balances {format_minor(total)} + in transit {format_minor(in_transit)} "
                        f"!= deposits {format_minor(deposits)} (difference {format_minor(total + in_transit - deposits)})")
    counts["decisions"] = len(recorded)
    return Report(ok=not problems, problems=problems, banks=banks, total_minor=total, deposits_minor=deposits,
                  in_transit_minor=in_transit, transactions=dict(counts),
                  etcd_agreement={"revision": agreement.revision, "compared": agreement.compared,
                                  "left_out": agreement.left_out})


def _where(sides, state):
    return ", ".join(f"{bank} ({hold.direction.lower()})" for bank, hold in sides if hold.state == state)
