"""`strife verify`: audit the ledgers against the decision records; exit 0 only when all holds."""
import json
import sqlite3

import grpc
from etcd3aio.errors import EtcdError

from strife.checks.audit import audit
from strife.commands import FAILED, OK, deployment
from strife.core.errors import Failed
from strife.core.money import format_minor


def run(args):
    topology = deployment(args)
    # the decisions are in etcd, which runs only with the deployment (unless it is an outside cluster)
    deployment(args, must_run=bool(topology.of_kind("etcd")))
    try:
        report = audit(topology)
    except (EtcdError, grpc.RpcError, sqlite3.Error, OSError, TimeoutError) as exc:  # etcd unreachable, unreadable ledger
        raise Failed(f"cannot audit: {str(exc) or type(exc).__name__}") from None
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
        agreement = report.etcd_agreement
        if agreement.get("compared"):
            left_out = "".join(f"; {name} left out ({why})" for name, why in agreement["left_out"].items())
            print(f"etcd: {len(agreement['compared'])} members compared at revision {agreement['revision']}{left_out}")
        for problem in report.problems:
            print(f"VIOLATION {problem}")
        print("verify: OK" if report.ok else f"verify: FAILED ({len(report.problems)} problems)")
    return OK if report.ok else FAILED
