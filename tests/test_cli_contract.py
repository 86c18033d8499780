"""The documented contract of the `strife` command, row by row: every command of the README's CLI
table, every example of the README's first payment and of each `--help`, run against one deployment
in the order a newcomer would, each checked for its exit code and the first line of its output.

One deployment for the whole module (the rows are a story: never started, first payment, running,
stopped, renewed); a row that fails names its command. The lists below are checked against the
README and the parser themselves, so a command or an example added there without a row here fails.

Most rows run the command in this process (strife.cli.main, as `Deployment.cli` does): a process
start per row would cost more than the command. `up` always runs as a process of its own (it forks
the supervisor), and so do a few rows, one per exit code, so that a real process is shown to answer
with the documented code and first line as the in-process rows do.
"""
import dataclasses
import re
import shlex
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from strife.cli import build_parser, main
from tests.helpers import Deployment, wait_for

README = Path(__file__).resolve().parent.parent / "README.md"

# The README's first payment runs on this (alice 1000.00 at bank1 and bob at bank2, as it shows).
TOPOLOGY = """
settings:
  prepare_timeout: 1s
  hold_timeout: 6s
  stop_grace: 3s
  backoff: 200ms
  warm_spares: false   # no processes made ahead for restarts: the CPU of 3 starts at each `up`
etcd:
  members: 1
banks:
  bank1: {}
  bank2: {}
gateway: {}
clients:
  admin: {bank: bank1, role: admin}
  alice: {bank: bank1, balance: "1000.00"}
  bob: {bank: bank2, balance: "50.00"}
"""
BAD_ETCD = TOPOLOGY.replace("  members: 1\n", "  members: 1\n  binary: /nonexistent/etcd\n")


@dataclasses.dataclass
class Row:
    command: str                    # what follows `strife`
    code: int                       # the documented exit code
    first: str                      # regex the first line of output must match (stdout's, else stderr's)
    then: Callable | None = None    # run after the row: wait until the deployment is as the next row needs
    or_last: bool = False           # a report whose README comment shows its summary: the last line may match
    real: bool = False              # run as a process of its own (`up` always is), not in this process

    def __str__(self):
        return self.command


def running(*names):
    def wait(d):
        wait_for(lambda: all(d.node(n)["state"] == "RUNNING" and d.node(n)["health"] == "SERVING" for n in names),
                 timeout=60, what=f"{', '.join(names)} running")
    return wait


def readme_first_payment():
    """The README's `A first payment` block: each command with the first line its comment shows."""
    block = README.read_text().split("## A first payment", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    rows = []
    for line in block.strip().splitlines():
        command, _, shown = line.partition("#")
        command, shown = command.strip().removeprefix("strife "), shown.strip()
        word = shown.split(":", 1)[0]
        code = {"aborted": 1, "rejected": 2, "queued": 4}.get(word, 0)
        # "(txn 6f1c...)": what varies is elided with "..."
        pattern = ".*".join(re.escape(part) for part in re.split(r"[0-9a-f]*\.\.\.", shown)) if shown else ".*"
        # its payments (committed: 0, aborted: 1) in processes of their own, as a newcomer runs them
        rows.append(Row(command, code, pattern, or_last=True, real=command.startswith("client ") and " pay " in command))
    return rows


NEVER_STARTED = [
    Row("status", 3, r"Strife is not running in ", real=True),
    Row("status --json", 3, r'\{"running": false, "nodes": \[\]\}'),
    Row("verify", 3, r"strife verify: no deployment has been started in .* \(run `strife up -d` first\)"),
    Row("client alice balance", 3, r"strife client: no deployment has been started"),
    Row("client alice outbox", 3, r"strife client: no deployment has been started"),
    Row("chaos --list", 3, r"strife chaos: Strife is not running in "),
    Row("restart bank1", 3, r"strife restart: Strife is not running in "),
    Row("down", 0, r"Strife is not running in .*; nothing to stop"),
    Row("logs", 3, r"strife logs: no logs in .*/logs: Strife has never run here \(`strife up -d` starts it\)$"),
    Row("logs --file nowhere.yaml", 2, r"strife logs: no topology file at nowhere.yaml$"),
    Row("up -d -f bad/topology.yaml", 2, r"strife up: etcd.binary in the topology names /nonexistent/etcd, "
                                         r"which is not an executable file"),
    Row("certs", 0, r"certificates in .*/certs: new authorities infra-ca, users-ca; issued etcd, bank1, bank2, "
                    r"gateway, admin, alice, bob, operator$"),
    Row("certs", 0, r"certificates in .*/certs: all present and valid$"),
    Row("certs --reissue alice", 0, r"re-issued alice \(client\): .*alice.key and .*alice.pem; "),
    Row("certs --reissue nosuch", 2, r"strife certs: no identity named 'nosuch' here \(identities: etcd, "),
    Row("certs --force --reissue alice", 2, r"usage: strife certs"),
]

RUNNING = [
    Row("up -d", 0, r"starting 7 nodes from "),
    Row("up -d", 1, r"strife up: Strife is already up in .* \(see `strife status`; `strife down` stops it\)"),
    Row("status", 0, r"NAME\s+KIND\s+PID\s+STATE\s+HEALTH\s+RESTARTS\s+UPTIME\s+ADDRESS\s+METRICS$"),
    Row("status --json", 0, r"\{$"),
    Row("logs -n 1", 0, r"\S+\s+\| \S"),
    Row("logs bank1 -n 1", 0, r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ "),
    Row("logs supervisor -n 1", 0, r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ strife"),
    Row("logs nosuch", 2, r"strife logs: no node named 'nosuch' \(nodes: etcd, bank1, "),
    Row("restart bank1", 0, r"bank1 restarted: RUNNING, pid \d+$"),
    Row("restart nosuch", 2, r"strife restart: no node named 'nosuch'"),
    Row("client alice balance --json", 0, r"\{$"),
    Row("client alice history", 0, r"CREATED\s+STATUS\s+AMOUNT\s+WITH\s+TXN\s+REASON$"),
    Row("client alice history --json", 0, r"\[$"),
    Row("client alice outbox", 0, r"the outbox of alice is empty: every payment has a definite outcome$"),
    Row("client alice outbox --json", 0, r"\[\]$"),
    Row("client alice pay bob 1 --id contract-1", 0, r"committed: alice paid bob 1.00 \(txn contract-1\)$"),
    Row("client alice pay bob 2 --id contract-1", 2, r"strife client: rejected: txn_id: idempotency_error: "),
    Row("client alice pay nobody 1", 2, r"rejected: payee: unknown payee 'nobody' \(txn ", real=True),
    Row("client alice pay bob 1x", 2, r"strife client: amount: "),
    Row("client alice pay bob 1 --json", 0, r"\{$"),
    Row("client admin register erin --bank bank2 --deposit 5", 0,
        r"registered erin at bank2 with 5.00; certificate in certs/erin.pem, password in state/credentials.json$"),
    Row("client erin passwd", 0, r"password of erin changed \(saved in state/credentials.json\)$"),
    Row("client erin balance", 0, r"erin at bank2: balance 5.00, available 5.00$"),
    Row("client erin pay alice 1", 0, r"committed: erin paid alice 1.00 "),
    # every example of `strife chaos --help`, in its order
    Row("chaos --pause bank2 --for 5s", 0, r"bank2 paused for 5s$"),
    Row("chaos --resume bank2", 0, r"bank2 resumed"),  # (--pause --at and --resume: the first payment's)
    Row("chaos --kill bank2", 0, r"bank2 killed; its restart policy \(on-failure\) applies$", then=running("bank2")),
    Row("chaos --failpoint gateway:after-decision=crash", 0, r"gateway: after-decision = crash$"),
    Row("chaos --failpoint bank1:prepare=delay:1s", 0, r"bank1: prepare = delay:1s$"),
    Row("chaos --clear gateway", 0, r"gateway: cleared all failpoints$"),
    Row("chaos --list", 0, r"bank1\s+prepare=delay:1s$"),
    Row("chaos --list --json", 0, r"\{$"),
    Row("chaos --clear bank1:prepare", 0, r"bank1: cleared prepare$"),
    Row("chaos --restart bank1", 0, r"bank1 restarted$"),
    Row("chaos --kill nosuch", 2, r"strife chaos: no node named 'nosuch'"),
    # the host and network examples of `strife chaos --help`: this topology has no hosts
    *[Row(f"chaos {fault}", 2, r"strife chaos: host faults need a topology with a `hosts:` section$")
      for fault in ("--kill-host h2", "--pause-host h2 --for 5s", "--resume-host h2")],
    *[Row(f"chaos {fault}", 2, r"strife chaos: network faults need a topology with a `hosts:` section$")
      for fault in ("--partition h1 h2", "--partition h1 h2 --one-way", "--isolate h3", "--loss h2 5%",
                    "--latency h2 50ms --jitter 10ms", "--heal h2", "--heal")],
    Row("chaos", 2, r"usage: strife chaos "),
    Row("trace --last", 0, r"TXN\s+STARTED\s+MS\s+OUTCOME\s+PAYMENT$"),
    Row("trace --slowest 3", 0, r"TXN\s+STARTED\s+MS\s+OUTCOME\s+PAYMENT$"),
    Row("trace nosuch", 1, r"strife trace: no record of nosuch in "),
    Row("top --once", 0, r"strife top  \d\d:\d\d:\d\d$"),
    Row("top --once --json", 0, r"\{$"),
    Row("certs --force", 2, r"strife certs: Strife is running in .*: renewing the authorities now would make "),
    Row("certs --reissue erin", 0, r"re-issued erin \(client\): .*; every command from now on uses it$"),
    Row("certs --reissue bank1", 0, r"re-issued bank1 \(bank\): .*; node bank1 uses it from its next start "),
    Row("client erin balance", 0, r"erin at bank2: balance 4.00, available 4.00$"),
    Row("bench --concurrency 0", 2, r"strife bench: --concurrency must be between 1 and 512$"),
    Row("torture --seconds soon", 2, r"strife torture: --seconds: "),
    Row("verify", 0, r"bank1\s+\d+ accounts\s+balance "),
    Row("verify --json", 0, r"\{$"),
    Row("down", 0, r"stopped 7 nodes$"),
]

STOPPED = [
    Row("status", 3, r"Strife is not running in "),
    Row("verify", 3, r"strife verify: Strife is not running in .* \(start it with `strife up -d`\)$"),
    Row("client alice balance", 3, r"strife client: no gateway at .* is reachable"),
    Row("client alice pay bob 1 --wait 0", 4, r"queued: alice -> bob 1.00 \(txn .*\); not delivered yet", real=True),
    Row("client alice outbox", 0, r"QUEUED AT\s+STATUS\s+AMOUNT\s+PAYEE\s+TXN\s+ATTEMPTS\s+NEXT TRY\s+LAST ERROR$"),
    Row("client alice history", 3, r"CREATED\s+STATUS"),
    Row("certs --force", 0, r"certificates in .*: new authorities infra-ca, users-ca; issued etcd, .*; re-issued 1 "
                            r"user\(s\) registered at run time \(erin\)$"),
    Row("up -d", 0, r"starting 7 nodes from "),
    Row("client erin balance", 0, r"erin at bank2: balance 4.00, available 4.00$"),  # renewed, still in
    Row("client alice pay bob 1", 0, r"committed: alice paid bob 1.00"),  # after the queued one, in order
    Row("down", 0, r"stopped 7 nodes$"),
]

ROWS = NEVER_STARTED + readme_first_payment() + RUNNING + STOPPED


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    home = tmp_path_factory.mktemp("newcomer")
    (home / "topology.yaml").write_text(textwrap.dedent(TOPOLOGY))
    (home / "bad").mkdir()
    (home / "bad" / "topology.yaml").write_text(textwrap.dedent(BAD_ETCD))
    d = Deployment(home)
    yield d
    d.teardown()


def first_line(result):
    for text in (result.stdout, result.stderr):
        if text.strip():
            return text.strip().splitlines()[0]
    return ""


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_the_documented_contract(newcomer, row):
    args = shlex.split(row.command)
    result = newcomer.run(*args) if row.real or args[0] == "up" else newcomer.cli(*args)
    shown = first_line(result)
    if row.or_last and not re.match(row.first, shown):
        shown = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1]
    assert result.returncode == row.code and re.match(row.first, shown), (
        f"strife {row.command}: exit {result.returncode} (documented {row.code}), first line {shown!r} "
        f"(documented /{row.first}/)\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}")
    assert "Traceback" not in result.stdout + result.stderr
    if row.then:
        row.then(newcomer)


def test_every_command_and_example_has_a_row():
    """The rows cover every subcommand and client action the parser has, every row of the README's
    CLI table, and every `strife ...` example of each --help."""
    parser = build_parser()
    commands = _choices(parser)
    covered = {shlex.split(r.command)[0] for r in ROWS}
    assert set(commands) <= covered, f"commands without a row: {set(commands) - covered}"
    actions = set(_choices(commands["client"]))
    used = {shlex.split(r.command)[2] for r in ROWS if r.command.startswith("client ")}
    assert actions <= used, f"client actions without a row: {actions - used}"
    options = {o for a in commands["chaos"]._actions for o in a.option_strings if o.startswith("--")} - {"--help", "--file"}
    in_rows = {w for r in ROWS if r.command.startswith("chaos ") for w in r.command.split() if w.startswith("--")}
    assert options <= in_rows, f"chaos options without a row: {options - in_rows}"
    table = [line for line in README.read_text().splitlines() if line.startswith("| `strife ")]
    assert table and {line.split()[2].strip("`") for line in table} <= covered
    examples = []
    for name, sub in commands.items():
        helped = sub.format_help() + (parser.format_help() if name == "up" else "")
        examples += re.findall(r"^\s+strife (\S.*?)\s*$", helped, re.M)  # the examples of a description
        examples += re.findall(r"`strife ([^`]+)`", helped)
    commands_in_rows = {r.command for r in ROWS}
    missing = {e for e in examples if e not in commands_in_rows}
    assert not missing, f"--help examples without a row: {missing}"
    # every documented exit code is also shown by a real process, not only in this one
    assert {r.code for r in ROWS if r.real or r.command.startswith("up ")} >= {0, 1, 2, 3, 4}


def _choices(parser):
    """{name: subparser} of a parser's subcommands."""
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(sub.choices)


@pytest.mark.parametrize("command", ["", *sorted(_choices(build_parser()))])
def test_every_help_answers_with_its_usage(command, capsys):
    """In this process: `strife X --help` is argparse's alone (a process each would cost seconds)."""
    with pytest.raises(SystemExit) as ended:
        main([*command.split(), "--help"])
    shown = capsys.readouterr().out
    assert ended.value.code == 0 and shown.startswith(f"usage: strife {command}".rstrip())
    if command == "client":  # pay's exits as the README has them
        assert "0 committed, 1 aborted, 2 rejected (nothing happened), 4 queued" in " ".join(shown.split())
