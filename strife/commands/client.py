"""`strife client NAME ...`: what a user does: pay, balance, history; and the admin's register."""
import asyncio
import datetime
import json
import secrets
import sys
import uuid

import grpc

from strife.commands import BAD_INPUT, FAILED, NOT_RUNNING, OK, UserError, add_file_option, topology_path
from strife.gateway_client import ClientSetupError, GatewayClient, load_deployment
from strife.launcher import certs, credentials
from strife.money import AmountError, format_minor, parse_amount
from strife.rpc import cl_gw_pb2 as cl

ABORTED, IN_PROGRESS = 1, 5   # exit codes of `pay` besides OK (committed)
# gRPC codes that mean "your request is wrong" rather than "the system is down"
_REQUEST_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
                   grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                   grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION}


def register(sub):
    p = sub.add_parser("client", help="act as a user: pay, balance, history, register (admin)",
                       description="Act as one of the topology's users (their certificate and password are "
                                   "under certs/ and state/credentials.json).")
    add_file_option(p)
    p.add_argument("name", help="the user acting, e.g. alice")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    a = actions.add_parser("pay", help="pay another user: exit 0 committed, 1 aborted, 5 still in progress")
    a.add_argument("payee")
    a.add_argument("amount", help="e.g. 50, 50.5 or 50.25 (at most two decimals)")
    a.add_argument("--id", dest="txn_id", help="transaction id (default: a new UUID); resending an id never pays twice")
    a.add_argument("--json", action="store_true")
    a.set_defaults(run=pay)

    a = actions.add_parser("balance", help="balance and available amount (balance minus held payments)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(run=balance)

    a = actions.add_parser("history", help="payments made and received, newest first")
    a.add_argument("--limit", type=int, default=50)
    a.add_argument("--json", action="store_true")
    a.set_defaults(run=history)

    a = actions.add_parser("register", help="(admin) register a new user with an account at a bank")
    a.add_argument("username")
    a.add_argument("--bank", required=True)
    a.add_argument("--deposit", default="0", help="opening deposit (default 0)")
    a.add_argument("--full-name", default="")
    a.add_argument("--password", help="default: a generated one, saved to state/credentials.json")
    a.set_defaults(run=register_user)

    a = actions.add_parser("passwd", help="change this user's password")
    a.add_argument("--password", help="default: a generated one")
    a.set_defaults(run=change_password)


def _run(args, work):
    """Run `work(topology, client)` against the gateway, turning gRPC errors into clear messages."""
    try:
        topology = load_deployment(topology_path(args).parent)
    except ClientSetupError as exc:
        raise UserError(str(exc)) from None
    address = topology.of_kind("gateway")[0].address

    async def go():
        try:
            client = GatewayClient(topology, args.name)  # its channel belongs to this event loop
        except ClientSetupError as exc:
            raise UserError(str(exc)) from None
        async with client:
            return await work(topology, client)
    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _REQUEST_ERRORS:
            raise UserError(f"refused: {exc.details()}", BAD_INPUT) from None
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise UserError(f"the gateway at {address} is not reachable ({exc.code().name.lower()}); "
                            f"is Strife up? (`strife status`)", NOT_RUNNING) from None
        raise UserError(f"{exc.code().name}: {exc.details()}", FAILED) from None


def _print_json(obj):
    print(json.dumps(obj, indent=2))


def pay(args):
    txn_id = args.txn_id or str(uuid.uuid4())

    async def work(topology, client):
        try:
            amount = parse_amount(args.amount, max_minor=topology.settings.max_amount_minor)
        except AmountError as exc:
            raise UserError(str(exc)) from None
        return amount, await client.pay(args.payee, amount, txn_id)

    amount, answer = _run(args, work)
    outcome = cl.Outcome.Name(answer.outcome).lower()
    reason = cl.AbortReason.Name(answer.reason) if answer.reason else ""
    if args.json:
        _print_json({"txn_id": answer.txn_id, "outcome": outcome, "payer": args.name, "payee": args.payee,
                     "amount_minor": amount, "reason": reason.lower(), "detail": answer.detail})
    elif answer.outcome == cl.COMMITTED:
        print(f"committed: {args.name} paid {args.payee} {format_minor(amount)} (txn {answer.txn_id})")
    elif answer.outcome == cl.ABORTED:
        print(f"aborted: {reason.lower().replace('_', ' ')}: {answer.detail} (txn {answer.txn_id})",
              file=sys.stderr)
    else:
        print(f"in progress: {answer.detail} (txn {answer.txn_id}; ask again with "
              f"`strife client {args.name} pay {args.payee} {args.amount} --id {answer.txn_id}`)", file=sys.stderr)
    return {cl.COMMITTED: OK, cl.ABORTED: ABORTED}.get(answer.outcome, IN_PROGRESS)


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


def history(args):
    answer = _run(args, lambda topology, client: client.history(args.limit))
    rows = [{"txn_id": p.txn_id, "payer": p.payer, "payee": p.payee, "amount_minor": p.amount_minor,
             "outcome": cl.Outcome.Name(p.outcome).lower(),
             "reason": cl.AbortReason.Name(p.reason).lower() if p.reason else "",
             "created_at": p.created_at, "decided_at": p.decided_at or None} for p in answer.payments]
    if args.json:
        _print_json(rows)
        return OK
    if not rows:
        print(f"no payments for {args.name} yet")
    for r in rows:
        direction = f"to {r['payee']}" if r["payer"] == args.name else f"from {r['payer']}"
        sign = "-" if r["payer"] == args.name else "+"
        print(f"{_when(r['created_at'])}  {r['outcome']:<11} {sign}{format_minor(r['amount_minor']):>10}  "
              f"{direction:<14} {r['txn_id']}  {r['reason']}")
    return OK


def register_user(args):
    password = args.password or secrets.token_urlsafe(16)
    home = topology_path(args).parent

    async def work(topology, client):
        try:
            deposit = parse_amount(args.deposit, max_minor=topology.settings.max_amount_minor, allow_zero=True)
        except AmountError as exc:
            raise UserError(f"--deposit: {exc}") from None
        answer = await client.register(args.username, args.bank, password, deposit, args.full_name)
        # The new user's identity for mTLS, signed by this deployment's CA, and their password.
        certs.issue(home, args.username, "client")
        credentials.set_password(home, args.username, password)
        return answer

    answer = _run(args, work)
    print(f"registered {answer.username} at {answer.bank} with {format_minor(answer.balance_minor)}; "
          f"certificate in certs/{answer.username}.pem, password in state/credentials.json")
    return OK


def change_password(args):
    password = args.password or secrets.token_urlsafe(16)
    _run(args, lambda topology, client: client.update(new_password=password))
    credentials.set_password(topology_path(args).parent, args.name, password)
    print(f"password of {args.name} changed (saved in state/credentials.json)")
    return OK
