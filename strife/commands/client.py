"""`strife client NAME ...`: what a user does: pay, balance, history; and the admin's register."""
import asyncio
import contextlib
import datetime
import functools
import json
import secrets
import sqlite3
import sys
import time
import uuid

import grpc

from strife.client import delivery
from strife.client.delivery import SenderLock
from strife.client.gateway_client import ClientSetupError, GatewayClient, user_password
from strife.client.outbox import DuplicateId, Outbox
from strife.commands import BAD_INPUT, FAILED, NOT_RUNNING, OK, QUEUED, bounded_option, deployment, topology_path
from strife.core import headers, names, passwords, storage
from strife.core.errors import BadInput, Failed, NotRunning
from strife.core.limits import MAX_HISTORY
from strife.core.money import AmountError, format_minor, parse_amount
from strife.core.outcomes import AbortReason, Outcome, Refusal, refusal
from strife.core.untrusted import field
from strife.deployment import credentials
from strife.observe import timeline

ABORTED = FAILED  # the exit code of an aborted payment
MAX_WAIT = 3600.0
# What a refusal from the gateway (strife/core/outcomes.py) means for this command: a wrong
# request, wrong credentials or a lockout is the user's to fix (2); no answer, Strife is not up (3).
_EXIT = {Refusal.REQUEST: BAD_INPUT, Refusal.CREDENTIALS: BAD_INPUT, Refusal.BUSY: BAD_INPUT,
         Refusal.UNREACHABLE: NOT_RUNNING}


def _as_valid_user(action):
    """Every action: the acting user's name is checked before any path is built from it."""
    @functools.wraps(action)
    def run(args):
        _check_name("name", args.name)
        _check_name("name", args.name, names.node_names(deployment(args)))
        return action(args)
    return run


def _check_name(what, name, nodes=()):
    why = names.problem(name, nodes)
    if why:
        raise BadInput(f"{what}: {why}")


def _check_password(password):
    try:
        passwords.check_strength(password)
    except passwords.PasswordError as exc:
        raise BadInput(str(exc)) from None


def _require_identity(topology, name):
    """A user with no certificate or no password here can do nothing: say so before anything is
    written (a payment queued for them would be paid by whoever is registered with that name later)."""
    try:
        user_password(topology.home, name)
    except ClientSetupError as exc:
        raise BadInput(str(exc)) from None


def _run(args, work):
    """Run `work(topology, client)` against the gateway, turning gRPC errors into clear messages."""
    topology = deployment(args)
    address = ", ".join(g.address for g in topology.of_kind("gateway"))

    async def go():
        try:
            client = GatewayClient(topology, args.name)  # its channel belongs to this event loop
        except ClientSetupError as exc:
            raise BadInput(str(exc)) from None
        async with client:
            await _drain_if_no_node(topology, args.name, client)
            return await work(topology, client)
    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as exc:
        bank = dict(exc.trailing_metadata() or ()).get(headers.BANK_UNAVAILABLE)
        if bank:  # the gateway answered; the bank behind it did not
            raise Failed(f"{exc.details()}: the gateway answered for it; see `strife status` and "
                         f"`strife logs {bank}`") from None
        code = _EXIT.get(refusal(exc.code()), FAILED)
        if code == BAD_INPUT:
            raise BadInput(f"refused: {exc.details()}") from None
        if code == NOT_RUNNING:
            serving = _gateway_serving(topology)
            if serving and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise Failed(f"the gateway at {address} runs but did not answer in time (deadline_exceeded): "
                             f"it may be overloaded; try again, or see `strife logs gateway`") from None
            if serving:  # up and answering its supervisor: it is us it will not take
                raise Failed(f"the gateway at {address} runs but did not take {args.name}'s connection "
                             f"({exc.code().name.lower()}: {exc.details()}); if {args.name}'s certificate is "
                             f"from another authority (renewed certificates), `strife certs --reissue "
                             f"{args.name}` gives a new one; else see `strife logs gateway`") from None
            raise NotRunning(f"no gateway at {address} is reachable ({exc.code().name.lower()}); "
                             f"is Strife up? (`strife status`)") from None
        raise Failed(f"{exc.code().name}: {exc.details()}") from None


def _gateway_serving(topology):
    from strife.launcher.control import ControlClient, NotRunning as Stopped
    try:
        status = ControlClient(topology.layout).status(timeout=5)
    except (Stopped, OSError, ValueError):
        return False
    return any(n.kind == "gateway" and n.state == "RUNNING" and n.health == "SERVING" for n in status.nodes)


@contextlib.contextmanager
def _recording_as(topology, name):
    """While this command sends for `name` (no client node is), it writes the client's timeline
    records as the node would: a payment's trace shows the client's steps either way."""
    try:
        timeline.configure(topology.layout.trace(name), name, topology.settings)
        recording = True
    except OSError:  # no logs/ yet (never started here), or not writable: it sends unrecorded
        recording = False
    try:
        yield
    finally:
        if recording:
            timeline.close()


async def _drain_if_no_node(topology, name, client):
    """With no client node delivering, this command delivers what earlier commands queued."""
    path = topology.layout.outbox(name)
    try:
        outbox = Outbox(path)
    except (sqlite3.Error, OSError) as exc:
        why = storage.problem(exc, path)
        if why is None:
            raise
        print(f"the outbox of {name} cannot be opened ({why}); queued payments wait", file=sys.stderr)
        return
    if not outbox.pending():
        return
    with SenderLock.held(topology.layout.sender_lock(name)) as sender:
        if not sender:
            return  # the client node is on it
        print(f"no client node is running for {name}: delivering {len(outbox.pending())} queued payment(s)",
              file=sys.stderr)
        with _recording_as(topology, name):
            await delivery.deliver(outbox, client, until=delivery.until_idle_or_failed, on_settled=lambda entry: print(
                f"  {entry.txn_id} to {entry.payee} {format_minor(entry.amount_minor)}: {entry.status.lower()}",
                file=sys.stderr))
        if (head := outbox.head()) is not None:  # an attempt failed, or the next is not due yet
            why = field(head.last_error) if head.last_error else "not sent yet"
            due = head.next_attempt_at - time.time()
            when = f"; its next try is due in {due:.1f} s" if due > 0 else ""
            print(f"  {len(outbox.pending())} still queued ({why}{when})", file=sys.stderr)


def _print_json(obj):
    print(json.dumps(obj, indent=2))


@_as_valid_user
def pay(args):
    """Queue the payment in the outbox (durable, with its id), then deliver it or wait for the
    client node to: committed (0), aborted (1) or still queued (4) when --wait runs out."""
    txn_id = args.txn_id or str(uuid.uuid4())
    bounded_option(args.wait, "--wait", 0, MAX_WAIT)
    topology = deployment(args)
    try:
        amount = parse_amount(args.amount, max_minor=topology.settings.max_amount_minor)
    except AmountError as exc:
        raise BadInput(f"amount: {exc}") from None
    if not names.NAME.fullmatch(args.payee):  # no user has such a name: refused before it is queued
        raise BadInput(f"payee: {names.problem(args.payee)}")
    if args.payee == args.name:
        raise BadInput("payee: payer and payee are the same user")
    why = names.txn_id_problem(txn_id)
    if why:
        raise BadInput(f"txn_id: {why}")
    _require_identity(topology, args.name)
    path = topology.layout.outbox(args.name)
    try:
        outbox = Outbox(path)
        entry = outbox.add(txn_id, args.payee, amount)
    except DuplicateId as exc:
        raise BadInput(f"rejected: txn_id: idempotency_error: {exc}") from None
    except (sqlite3.Error, OSError) as exc:
        raise Failed(f"{storage.plainly(_disk_problem(exc, path))} ({path}): the payment was NOT queued "
                     f"and nothing was sent; free some space and pay again") from None
    try:
        entry = asyncio.run(_deliver_or_wait(topology, args.name, outbox, entry, args.wait))
    except (sqlite3.Error, OSError) as exc:  # the outbox took the payment, not what happened to it since
        why = f"{storage.plainly(_disk_problem(exc, path))}: what happened to it could not be recorded"
        return _report_payment(args, outbox.get(txn_id), why)
    why = None
    if entry.pending and storage.is_full(path):
        why = "the disk is full: it is delivered once there is space"
    return _report_payment(args, entry, why)


def _disk_problem(exc, path):
    """What the disk said ('disk full') when it refused a write to `path`; else `exc` goes on."""
    why = storage.problem(exc, path)
    if why is None:
        raise exc
    return why


async def _deliver_or_wait(topology, name, outbox, entry, wait):
    """Until `entry` is settled, it has failed to reach the gateway once, or `wait` seconds pass."""
    deadline = time.monotonic() + wait
    with SenderLock.held(topology.layout.sender_lock(name)) as sender:
        if not sender:  # the client node is delivering: watch our row
            return await delivery.await_outcome(outbox, entry, deadline)
        earlier = [e for e in outbox.pending() if e.seq < entry.seq]
        if earlier:
            print(f"no client node is running for {name}: delivering {len(earlier)} earlier queued "
                  f"payment(s) first", file=sys.stderr)
        async with GatewayClient(topology, name) as client:
            with _recording_as(topology, name):
                await delivery.deliver(outbox, client, until=delivery.until_settled_or_failed(outbox, entry.txn_id),
                                       deadline=deadline)
        return outbox.get(entry.txn_id)


def _report_payment(args, entry, why=None):
    """`why`: a reason it is still queued, shown instead of the last delivery error."""
    # the gateway refused the request itself (rejected): bad input, nothing happened
    outcome = entry.outcome.word if entry.outcome else "queued"
    if args.json:
        _print_json({"txn_id": entry.txn_id, "outcome": outcome, "payer": args.name, "payee": entry.payee,
                     "amount_minor": entry.amount_minor, "reason": entry.reason.lower(), "detail": entry.detail,
                     "last_error": why or entry.last_error})
    elif outcome == "committed":
        print(f"committed: {args.name} paid {entry.payee} {format_minor(entry.amount_minor)} (txn {entry.txn_id})")
    elif outcome == "rejected":
        print(f"rejected: {entry.detail} (txn {entry.txn_id})", file=sys.stderr)
    elif outcome == "aborted":
        print(f"aborted: {entry.reason.lower().replace('_', ' ')}: {entry.detail} (txn {entry.txn_id})",
              file=sys.stderr)
    else:
        why = f" ({why or entry.last_error})" if why or entry.last_error else ""
        print(f"queued: {args.name} -> {entry.payee} {format_minor(entry.amount_minor)} (txn {entry.txn_id}); "
              f"not delivered yet{why}. It will be sent with the same id; see `strife client {args.name} "
              f"outbox` and `history`", file=sys.stderr)
    return {"committed": OK, "aborted": ABORTED, "rejected": BAD_INPUT}.get(outcome, QUEUED)


@_as_valid_user
def show_outbox(args):
    topology = deployment(args)
    entries = _local_outbox(topology, args.name, lambda outbox: outbox.pending())
    rows = [_entry_row(e, args.name) for e in entries]
    if args.json:
        _print_json(rows)
        return OK
    if not rows:
        print(f"the outbox of {args.name} is empty: every payment has a definite outcome")
        return OK
    print(f"{'QUEUED AT':<19}  {'STATUS':<9} {'AMOUNT':>11}  {'PAYEE':<13} {'TXN':<36}  {'ATTEMPTS':>8}  "
          f"{'NEXT TRY':<19}  LAST ERROR")
    for r in rows:
        retry = _when(r["next_attempt_at"]) if r["next_attempt_at"] else "now"
        print(f"{_when(r['created_at'])}  {r['status']:<9} -{format_minor(r['amount_minor']):>10}  "
              f"{'to ' + r['payee']:<13} {r['txn_id']:<36}  {r['attempts']:>8}  {retry:<19}  {r['last_error']}")
    return OK


def _status_word(outcome):
    """One word per state, the same in pay, history and outbox: committed, aborted, rejected, or
    queued for anything not definite yet (waiting, being sent, being decided)."""
    return QUEUED_WORD if outcome is None or outcome is Outcome.IN_PROGRESS else outcome.word


QUEUED_WORD = "queued"


def _entry_row(e, payer):
    return {"txn_id": e.txn_id, "payer": payer, "payee": e.payee, "amount_minor": e.amount_minor,
            "status": _status_word(e.outcome),
            # a refusal has no abort reason: the gateway's words say what was wrong
            "reason": "" if e.outcome is Outcome.REJECTED else e.reason.lower(),
            "detail": e.detail if e.outcome is Outcome.REJECTED else "",
            "attempts": e.attempts, "last_error": e.last_error,
            "created_at": e.created_at, "next_attempt_at": e.next_attempt_at or None}


def _local_outbox(topology, name, read):
    """Entries of this client's outbox; none (and no file made) when it has none."""
    path = topology.layout.outbox(name)
    return read(Outbox(path)) if path.exists() else []


@_as_valid_user
def balance(args):
    answer = _run(args, lambda topology, client: client.balance())
    if args.json:
        _print_json({"user": answer.username, "bank": answer.bank, "balance_minor": answer.balance_minor,
                     "available_minor": answer.available_minor})
    else:
        print(f"{answer.username} at {answer.bank}: balance {format_minor(answer.balance_minor)}, "
              f"available {format_minor(answer.available_minor)}")
    return OK


def _when(seconds):
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S") if seconds else "-"


@_as_valid_user
def history(args):
    """The gateway's record merged with this client's outbox: queued and in-flight payments too."""
    bounded_option(args.limit, "--limit", 1, MAX_HISTORY)
    topology = deployment(args)
    local = {e.txn_id: e for e in _local_outbox(topology, args.name, lambda outbox: outbox.recent(args.limit))}
    code = OK
    try:
        answer = _run(args, lambda topology, client: client.history(args.limit))
        remote = answer.payments
    except NotRunning as exc:
        print(f"{exc}\nshowing only this client's outbox", file=sys.stderr)
        remote, code = [], NOT_RUNNING
    rows = [{"txn_id": p.txn_id, "payer": p.payer, "payee": p.payee, "amount_minor": p.amount_minor,
             "status": _status_word(Outcome.of_number(p.outcome)),
             "reason": AbortReason.of_number(p.reason).word, "detail": "",
             # when the user asked (the outbox), not when the gateway first heard of it
             "created_at": local[p.txn_id].created_at if p.txn_id in local else p.created_at,
             "decided_at": p.decided_at or None} for p in remote]
    known = {r["txn_id"] for r in rows}
    for e in local.values():
        if e.txn_id not in known:  # not at the gateway (yet): queued, in flight, or refused outright
            rows.append(dict(_entry_row(e, args.name), decided_at=None))
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    rows = rows[:args.limit]
    if args.json:
        _print_json(rows)
        return code
    if not rows:
        print(f"no payments for {args.name} yet")
        return code
    print(f"{'CREATED':<19}  {'STATUS':<10} {'AMOUNT':>11}  {'WITH':<14} {'TXN':<36}  REASON")
    for r in rows:
        direction = f"to {r['payee']}" if r["payer"] == args.name else f"from {r['payer']}"
        sign = "-" if r["payer"] == args.name else "+"
        print(f"{_when(r['created_at'])}  {r['status']:<10} {sign}{format_minor(r['amount_minor']):>10}  "
              f"{direction:<14} {r['txn_id']:<36}  {r['reason'] or r['detail']}")
    return code


@_as_valid_user
def register_user(args):
    password = args.password or secrets.token_urlsafe(16)
    home = topology_path(args).parent
    topology = deployment(args)
    _check_name("username", args.username, names.node_names(topology))
    _check_password(password)
    try:
        deposit = parse_amount(args.deposit, max_minor=topology.settings.max_amount_minor, allow_zero=True)
    except AmountError as exc:
        raise BadInput(f"deposit: {exc}") from None

    async def work(topology, client):
        answer = await client.register(args.username, args.bank, password, deposit, args.full_name)
        # The new user's identity for mTLS, signed by this deployment's CA, and their password.
        from strife.deployment import certs  # cryptography: only to make a certificate
        certs.issue(home, args.username, "client")
        credentials.set_password(home, args.username, password)
        return answer

    answer = _run(args, work)
    print(f"registered {answer.username} at {answer.bank} with {format_minor(answer.balance_minor)}; "
          f"certificate in certs/{answer.username}.pem, password in state/credentials.json")
    return OK


@_as_valid_user
def change_password(args):
    password = args.password or secrets.token_urlsafe(16)
    _check_password(password)
    _run(args, lambda topology, client: client.update(new_password=password))
    credentials.set_password(topology_path(args).parent, args.name, password)
    print(f"password of {args.name} changed (saved in state/credentials.json)")
    return OK
