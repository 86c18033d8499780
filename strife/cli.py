"""The one entry point: `strife` (and `python -m strife`).

Parsing is here, and so is the one place where an error becomes an exit code (StrifeError and its
kinds, strife/core/errors.py). The work is in strife/commands/, one module per group, imported
only when its command runs: `strife --help` or `strife status` does not pay for gRPC,
cryptography or the supervisor.
"""
import argparse
import importlib
import os
import select
import signal
import sqlite3
import sys

from strife import __version__
from strife.core import storage
from strife.core.errors import Exit, StrifeError


def _file_option(parser):
    parser.add_argument("-f", "--file", metavar="TOPOLOGY",
                        help="the deployment's topology file (default: ./topology.yaml or $STRIFE_TOPOLOGY)")


def _lifecycle(sub):
    p = sub.add_parser("up", help="start every node of a topology and supervise them",
                       description="Validate the topology, make certificates, then start etcd, banks, "
                                   "gateway and clients in order, each once the previous are healthy. "
                                   "Foreground by default (Ctrl-C stops all); -d returns once all are healthy.")
    p.add_argument("topology", nargs="?", help="topology file (default: ./topology.yaml)")
    _file_option(p)
    p.add_argument("-d", "--detach", action="store_true",
                   help="run the supervisor in the background; exit 0 when all nodes are healthy, 1 if one is not")
    p.add_argument("--timeout", type=float, default=120.0, help="with -d: seconds to wait for health (default 120)")
    p.add_argument("--host", metavar="NAME",
                   help="a topology with hosts, on real machines: run only this host's nodes here (run it on "
                        "each machine, with the same topology, certs/ and state/credentials.json). Without it, "
                        "every host runs here in its own network namespace (needs root)")
    p.set_defaults(run="lifecycle:up")

    p = sub.add_parser("down", help="stop every node (reverse order, SIGTERM then SIGKILL)")
    _file_option(p)
    p.set_defaults(run="lifecycle:down")

    p = sub.add_parser("status", help="show each node: kind, pid, state, health, restarts, uptime, address")
    _file_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run="lifecycle:status")

    p = sub.add_parser("restart", help="stop one node and start it again")
    _file_option(p)
    p.add_argument("node")
    p.set_defaults(run="lifecycle:restart")

    p = sub.add_parser("logs", help="show nodes' logs (logs/<node>.log, with rotated files); -f follows",
                       description="The last lines of the nodes' logs (and of their rotated files), all "
                                   "merged in time order with each node's name in front; or one node's "
                                   "(`supervisor` for the supervisor's own log). -f keeps following, "
                                   "across rotations.")
    # -f means follow here, as in tail -f; the topology file is --file
    p.add_argument("--file", metavar="TOPOLOGY", help="the deployment's topology file (default: ./topology.yaml)")
    p.add_argument("node", nargs="?", help="one node, or supervisor (default: all, prefixed with their names)")
    p.add_argument("-n", "--lines", type=int, default=50, help="lines from the end of each log (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    p.set_defaults(run="lifecycle:show_logs")

    p = sub.add_parser("certs", help="create the deployment's CA and certificates (renew with --force)",
                       description="Create what is missing or about to expire: the two authorities and a key and "
                                   "certificate per identity (nodes, the operator, users registered at run time). "
                                   "--force renews everything, authorities included, and is refused while the "
                                   "deployment runs (its nodes would no longer trust each other): `strife down`, "
                                   "`strife certs --force`, `strife up -d`. --reissue NAME gives one identity a "
                                   "new key and certificate from the current authority, also while running.")
    _file_option(p)
    renew = p.add_mutually_exclusive_group()
    renew.add_argument("--force", action="store_true",
                       help="renew every certificate, including both authorities (only while stopped)")
    renew.add_argument("--reissue", metavar="NAME", help="a new key and certificate for one identity (a node, "
                                                         "the operator or a user)")
    p.set_defaults(run="certs:run")


def _client(sub):
    p = sub.add_parser("client", help="act as a user: pay, balance, history, register (admin)",
                       description="Act as one of the topology's users (their certificate and password are "
                                   "under certs/ and state/credentials.json).")
    _file_option(p)
    p.add_argument("name", help="the user acting, e.g. alice")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    a = actions.add_parser("pay", help="pay another user: exit 0 committed, 1 aborted, 2 rejected (nothing happened), "
                                       "4 queued (sent later)",
                           description="The payment gets its id and goes into this client's durable outbox "
                                       "before anything is sent; it is delivered with that id, exactly once, "
                                       "even if the gateway is down now (then: 'queued', exit 4).")
    a.add_argument("payee")
    a.add_argument("amount", help="e.g. 50, 50.5 or 50.25 (at most two decimals)")
    a.add_argument("--id", dest="txn_id", help="transaction id (default: a new UUID); resending an id never pays twice")
    a.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for the outcome before answering 'queued' (default 5); "
                        "sooner when an attempt fails (the gateway away or slow): the payment stays "
                        "queued and goes again with its id")
    a.add_argument("--json", action="store_true")
    a.set_defaults(run="client:pay")

    a = actions.add_parser("outbox", help="payments queued here that have no definite outcome yet")
    a.add_argument("--json", action="store_true")
    a.set_defaults(run="client:show_outbox")

    a = actions.add_parser("balance", help="balance and available amount (balance minus held payments)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(run="client:balance")

    a = actions.add_parser("history", help="payments made and received, newest first")
    a.add_argument("--limit", type=int, default=50)
    a.add_argument("--json", action="store_true")
    a.set_defaults(run="client:history")

    a = actions.add_parser("register", help="(admin) register a new user with an account at a bank")
    a.add_argument("username")
    a.add_argument("--bank", required=True)
    a.add_argument("--deposit", default="0", help="opening deposit (default 0)")
    a.add_argument("--full-name", default="")
    a.add_argument("--password", help="default: a generated one, saved to state/credentials.json")
    a.set_defaults(run="client:register_user")

    a = actions.add_parser("passwd", help="change this user's password")
    a.add_argument("--password", help="default: a generated one")
    a.set_defaults(run="client:change_password")


def _chaos(sub):
    p = sub.add_parser(
        "chaos", help="pause, kill or resume a node; arm failpoints at protocol steps",
        description="Faults on request, to watch two-phase commit hold. Examples:\n"
                    "  strife chaos --pause bank2 --for 5s\n"
                    "      SIGSTOP bank2, SIGCONT after 5s\n"
                    "  strife chaos --pause bank2 --at prepare\n"
                    "      bank2 freezes inside its next prepare\n"
                    "  strife chaos --resume bank2\n"
                    "      SIGCONT and clear its pause failpoints\n"
                    "  strife chaos --kill bank2\n"
                    "      SIGKILL; the supervisor restarts it\n"
                    "  strife chaos --failpoint gateway:after-decision=crash\n"
                    "      the gateway crashes right after its next commit decision\n"
                    "  strife chaos --clear gateway\n"
                    "      remove every failpoint of the gateway\n"
                    "  strife chaos --list\n"
                    "      the armed failpoints of every node\n"
                    "Failpoint actions: pause, delay:DURATION, error, crash.\n"
                    "With hosts (a topology with `hosts:`, run as root):\n"
                    "  strife chaos --kill-host h2\n"
                    "      SIGKILL every node of h2; each restarts by its policy\n"
                    "  strife chaos --pause-host h2 --for 5s\n"
                    "      SIGSTOP every node of h2, SIGCONT after 5s\n"
                    "  strife chaos --resume-host h2\n"
                    "      SIGCONT every node of h2\n"
                    "  strife chaos --partition h1 h2\n"
                    "      h1 and h2 no longer reach each other (--one-way: h1 does not reach h2)\n"
                    "  strife chaos --isolate h3\n"
                    "      h3 reaches nobody, nobody reaches h3\n"
                    "  strife chaos --loss h2 5%\n"
                    "      h2 loses 5% of what it receives and sends\n"
                    "  strife chaos --latency h2 50ms --jitter 10ms\n"
                    "      needs the kernel's netem\n"
                    "  strife chaos --heal h2\n"
                    "      remove the network faults of h2 (--heal alone: every one)\n"
                    "`strife status` lists the network faults in force.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _file_option(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--pause", metavar="NODE", help="freeze a node (SIGSTOP of its process group)")
    what.add_argument("--resume", metavar="NODE", help="unfreeze a node and clear its pause failpoints")
    what.add_argument("--kill", metavar="NODE", help="SIGKILL a node; its restart policy applies (answered once the supervisor has seen it die)")
    what.add_argument("--restart", metavar="NODE", help="stop a node gracefully and start it again")
    what.add_argument("--failpoint", metavar="NODE:STEP=ACTION", action="append",
                      help="arm a failpoint (repeatable)")
    what.add_argument("--clear", metavar="NODE[:STEP]", help="remove a node's failpoints (or one of them)")
    what.add_argument("--list", action="store_true", help="show the armed failpoints of every node")
    what.add_argument("--kill-host", metavar="HOST", help="SIGKILL every node of a host")
    what.add_argument("--pause-host", metavar="HOST", help="freeze every running node of a host")
    what.add_argument("--resume-host", metavar="HOST", help="unfreeze every paused node of a host")
    what.add_argument("--partition", nargs=2, metavar="HOST", help="cut two hosts apart (both ways)")
    what.add_argument("--isolate", metavar="HOST", help="cut a host from every other")
    what.add_argument("--loss", nargs=2, metavar=("HOST", "PERCENT"), help="lose this share of a host's packets")
    what.add_argument("--latency", nargs=2, metavar=("HOST", "DELAY"), help="delay a host's packets (tc netem)")
    what.add_argument("--heal", nargs="?", const="", metavar="HOST",
                      help="remove every network fault, or those involving HOST")
    p.add_argument("--one-way", action="store_true", help="with --partition: only the first host's packets are lost")
    p.add_argument("--jitter", metavar="DURATION", help="with --latency: random variation of the delay")
    p.add_argument("--for", dest="duration", metavar="DURATION", help="with --pause: resume after this long")
    p.add_argument("--at", metavar="STEP", help="with --pause: freeze inside this protocol step instead of now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run="chaos:run")


def _checks(sub):
    p = sub.add_parser("verify", help="audit: money conserved, no negative balance, decisions applied, no stuck hold",
                       description="Reads every bank's ledger (state/<bank>/ledger.db) and the commit decisions "
                                   "in etcd, and with several etcd members compares their data (a member that "
                                   "does not answer is left out). Exit 0 when every invariant holds, 1 with a "
                                   "report when one does not.")
    _file_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run="verify:run")

    p = sub.add_parser("torture", help="random payments under a seeded fault schedule, then verify",
                       description="A Jepsen-style bank workload against the running deployment: concurrent "
                                   "random payments among all clients (some through a client's outbox) while "
                                   "a seeded schedule pauses and kills banks, arms failpoints at every 2PC "
                                   "step, kills the gateway, restarts etcd and kills a client (and, with hosts, as root: "
                                   "partitions, isolates hosts and adds loss). Then it heals, "
                                   "waits for in-doubt resolution and audits. The same seed replays the "
                                   "same schedule. Exit 0 only when the audit is clean.")
    _file_option(p)
    p.add_argument("--seconds", default="30", help="how long faults are injected (default 30)")
    p.add_argument("--seed", type=int, help="schedule seed (default: random, printed)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent payers (default 8)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object (with, for every "
                                                       "fault, the seconds until its node was healthy again "
                                                       "and until the next commit through it)")
    p.set_defaults(run="torture:run")

    p = sub.add_parser("bench", help="payments/s and latency, with a raw gRPC echo as the reference",
                       description="Closed-loop payments among many bench accounts from C concurrent callers "
                                   "against the running deployment (or, if none runs here, one started in a "
                                   "temporary directory from the topology). In the same run: a raw gRPC echo "
                                   "over the same mTLS at the same concurrency, taken in turns with the "
                                   "payments (2 s each at many callers, 1 s at one), so a machine whose speed "
                                   "drifts slows both alike. ratio = payments/s x 6 / echo/s "
                                   "(a payment costs at least six RPCs). Also reports CPU milliseconds per "
                                   "payment and per echo call by process, which explain the ratio on a busy "
                                   "machine.")
    _file_option(p)
    p.add_argument("--seconds", default="10", help="length of each many-caller phase (default 10)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent callers (default 32)")
    p.add_argument("--json", action="store_true", help="print every figure as one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="write latency over time as a PNG (needs matplotlib)")
    p.add_argument("--floor", action="store_true",
                   help="also measure the floor: the same phases through do-nothing stand-ins of a payment's "
                        "shape (a relaying gateway, two banks that fsync one row per call, a decider), which "
                        "no code of that shape can beat on this machine (`floor` in --json)")
    p.set_defaults(run="bench:run")


def _observe(sub):
    p = sub.add_parser("trace", help="a payment's timeline across every node: a waterfall, --json or --plot",
                       description="Merges what every node wrote about one payment (logs/<node>.trace.jsonl): "
                                   "the client's outbox and send attempts, the gateway, each bank's prepare, "
                                   "the decision in etcd, the reply, phase 2, and every retry, failpoint, "
                                   "restart and recovery that played a part. --last and --slowest list "
                                   "payments worth a look.")
    _file_option(p)
    p.add_argument("txn_id", nargs="?", metavar="TXN_ID")
    p.add_argument("--last", type=int, nargs="?", const=10, metavar="N", help="the N latest payments (default 10)")
    p.add_argument("--slowest", type=int, nargs="?", const=10, metavar="N", help="the N slowest payments (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the waterfall as a PNG (needs matplotlib: "
                                                      "pip install 'strife[plot]')")
    p.set_defaults(run="trace:run")

    p = sub.add_parser("top", help="a live view of the deployment: nodes, payments/s, p50/p99, holds, faults",
                       description="Refreshes every second from the supervisor and every node's metrics. Keys "
                                   "pause, resume, kill or restart the selected node and arm a failpoint, "
                                   "as `strife chaos` does. --once prints one frame as text.")
    _file_option(p)
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--json", action="store_true", help="with --once: the frame's figures as JSON")
    p.set_defaults(run="top:run")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="strife",
        description="Strife: banks, a two-phase-commit gateway and clients over gRPC with mutual TLS, "
                    "discovered through etcd, all started and supervised from one topology.yaml.",
        epilog="Start with `strife up -d`, pay with `strife client alice pay bob 50`, look with `strife status` "
               "and `strife verify`; `strife down` stops everything. Every command has --help.")
    parser.add_argument("--version", action="version", version=f"strife {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (_lifecycle, _client, _chaos, _checks, _observe):
        group(sub)
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


def _command(spec):
    """'client:pay' -> strife.commands.client.pay, imported now."""
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(f"strife.commands.{module}"), function)


def _run(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return Exit.BAD_INPUT
    try:
        return _command(args.run)(args)
    except StrifeError as exc:
        print(f"strife {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except (sqlite3.Error, OSError) as exc:
        why = storage.problem(exc)
        if why is None:
            raise
        filename = getattr(exc, "filename", None)
        where = f" ({filename})" if filename else ""
        print(f"strife {args.command}: {storage.plainly(why)}{where}; stopped there. Free some space "
              f"and run it again", file=sys.stderr)
        return Exit.FAILED


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
