"""`strife verify`: audit the ledgers against the decision records; exit 0 only when all holds."""
import json

from strife.checks.audit import audit
from strife.commands import FAILED, OK, UserError, add_file_option, deployment
from strife.core.money import format_minor


def register(sub):
    p = sub.add_parser("verify", help="audit: money conserved, no negative balance, decisions applied, no stuck hold",
                       description="Reads every bank's ledger (state/<bank>/ledger.db) and the commit decisions "
                                   "in etcd. Exit 0 when every invariant holds, 1 with a report when one does not.")
    add_file_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args):
    topology = deployment(args)
    try:
        report = audit(topology)
    except Exception as exc:  # etcd unreachable, unreadable ledger
        raise UserError(f"cannot audit: {exc}", FAILED) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for bank, figures in report.banks.items():
            print(f"{bank:<10} {figures['accounts']:>4} accounts  balance {format_minor(figures['balance_minor']):>12}"
                  f"  deposits {format_minor(figures['deposits_minor']):>12}")
        t = report.transactions
        print(f"total {format_minor(report.total_minor)} (+ {format_minor(report.in_transit_minor)} in transit) "
              f"vs deposits {format_minor(report.deposits_minor)}; transactions: {t.get('committed', 0)} committed, "
              f"{t.get('aborted', 0)} aborted, {t.get('in_flight', 0)} in flight, {t.get('decisions', 0)} decisions")
        for problem in report.problems:
            print(f"VIOLATION {problem}")
        print("verify: OK" if report.ok else f"verify: FAILED ({len(report.problems)} problems)")
    return OK if report.ok else FAILED
