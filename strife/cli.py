"""The one entry point: `strife` (and `python -m strife`). Thin: parsing here, work in the library."""
import argparse
import os
import sys

from strife import __version__
from strife.commands import BAD_INPUT, UserError, bench, chaos, client, lifecycle, torture, verify

GROUPS = [lifecycle, client, chaos, verify, torture, bench]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="strife",
        description="Strife: banks, a two-phase-commit gateway and clients over gRPC with mutual TLS, "
                    "discovered through etcd, all started and supervised from one topology.yaml.",
        epilog="Start with `strife up -d`, pay with `strife client alice pay bob 50`, look with `strife status` "
               "and `strife verify`; `strife down` stops everything. Every command has --help.")
    parser.add_argument("--version", action="version", version=f"strife {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv=None):
    os.umask(0o077)  # what a command creates (certs, state, logs, outboxes) is its owner's alone
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return BAD_INPUT
    try:
        return args.run(args)
    except UserError as exc:
        print(f"strife {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
