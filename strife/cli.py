"""The one entry point: `strife` (and `python -m strife`). Thin: parsing here, work in the library."""
import argparse
import os
import select
import signal
import sqlite3
import sys

from strife import __version__
from strife.commands import BAD_INPUT, FAILED, UserError, bench, chaos, client, lifecycle, torture, verify
from strife.core import storage

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
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, where a closed pipe could not be handled
    except BrokenPipeError:
        if not _reader_gone():
            raise  # a socket's, not our output's
        return _end_quietly()


def _run(argv):
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
    except (sqlite3.Error, OSError) as exc:
        why = storage.problem(exc)
        if why is None:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"strife {args.command}: {storage.plainly(why)}{where}; stopped there. Free some space "
              f"and run it again", file=sys.stderr)
        return FAILED


def _reader_gone():
    """Whether the reader of our stdout or stderr has gone (`strife logs | head` once head has its
    lines): the pipe then reports an error condition when polled."""
    poller = select.poll()
    for stream in (sys.stdout, sys.stderr):
        try:
            poller.register(stream.fileno(), select.POLLOUT)
        except (AttributeError, ValueError, OSError):
            pass
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _end_quietly():
    """Like any Unix tool whose reader has gone: no traceback, the exit status of SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())  # the interpreter flushes them once more at exit
        except (AttributeError, ValueError, OSError):
            pass
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
