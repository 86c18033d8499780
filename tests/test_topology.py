"""Topology validation: every bad file is refused before anything starts, naming field and reason."""
import pathlib
import textwrap

import pytest

from strife.deployment import topology
from tests.helpers import SMALL_TOPOLOGY, processes_of


def problems_of(tmp_path, text):
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(topology.TopologyError) as caught:
        topology.load(path)
    return caught.value.problems


def test_the_small_and_default_topologies_are_valid(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text(SMALL_TOPOLOGY)
    t = topology.load(path)
    assert [n.kind for n in t.nodes] == ["etcd", "bank", "bank", "gateway", "client", "client", "client"]
    assert t.node("alice").balance_minor == 10000
    assert t.node("admin").role == "admin"
    assert t.settings.prepare_timeout == 2.0
    assert t.home == tmp_path
    repo_default = topology.load(pathlib.Path(__file__).parent.parent / "topology.yaml")
    assert len(repo_default.of_kind("bank")) >= 2 and any(c.role == "admin" for c in repo_default.of_kind("client"))


def test_log_settings_take_sizes_with_units_and_have_sane_defaults(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text(SMALL_TOPOLOGY)
    default = topology.load(path).settings
    assert (default.log_max_bytes, default.log_keep, default.log_format) == (10 * 1024 * 1024, 4, "text")
    for size, expected in (("512KB", 512 * 1024), ("10 MB", 10 * 1024 * 1024), (65536, 65536), ("1.5m", 1572864)):
        path.write_text(SMALL_TOPOLOGY.replace("backoff: 200ms", f"backoff: 200ms\n  log_max_bytes: {size}"))
        assert topology.load(path).settings.log_max_bytes == expected


def test_resolved_form_round_trips(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text(SMALL_TOPOLOGY.replace("bank1: {}", "bank1: {port: 7101, failpoints: {prepare: 'delay:1s'}}")
                    .replace("backoff: 200ms", "backoff: 200ms\n  log_max_bytes: 64KB\n  log_keep: 2\n"
                                               "  log_format: json"))
    original = topology.load(path)
    for again, text in ((tmp_path / "again.yaml", original.to_yaml()), (tmp_path / "again.json", original.to_json())):
        again.write_text(text)  # the resolved copy `up` writes for the nodes is the JSON
        reread = topology.load(again, home=tmp_path)
        assert reread.nodes == original.nodes
        assert reread.settings == original.settings


def test_the_resolved_json_is_as_strict_as_the_yaml(tmp_path):
    path = tmp_path / "topology.resolved.json"
    path.write_text('{"settings": {"backoff": "1s"}, "settings": {}}')
    with pytest.raises(topology.TopologyError, match="duplicate key 'settings'"):
        topology.load(path)
    path.write_text('{"settings": {"max_amount": 10.50}')
    with pytest.raises(topology.TopologyError, match="topology.resolved.json: Expecting"):
        topology.load(path)


@pytest.mark.parametrize("change, expected", [
    (("bank1: {}", "bank1: {colour: red}"), "banks.bank1.colour: unknown key"),
    (("gateway: {}", "gateway: {}\nflavour: 1"), "flavour: unknown key"),
    (("bank2: {}", "bank2: {}\n  bank2: {}"), "duplicate key 'bank2'"),
    (("alice: {bank: bank1", "bank2: {bank: bank1"), "already used by banks.bank2"),
    (("bob: {bank: bank2", "bob: {bank: bank9"), "clients.bob.bank: unknown bank 'bank9'"),
    (('balance: "100.00"', 'balance: "-5"'), "clients.alice.balance: '-5': an amount cannot be negative"),
    (('balance: "100.00"', "balance: 10.505"), "clients.alice.balance: '10.505': at most two decimals"),
    (("prepare_timeout: 2s", "prepare_timeout: soon"), "settings.prepare_timeout: 'soon' is not a duration"),
    (("bank1: {}\n  bank2: {}", "bank1: {port: 7001}\n  bank2: {port: 7001}"),
     "banks.bank2.port: 7001 already used by bank1"),
    (("bank1: {}", "bank1: {port: 70000}"), "banks.bank1.port: 70000 is out of range"),
    (("bank1: {}", "bank1: {restart: sometimes}"), "banks.bank1.restart: 'sometimes' is not one of"),
    (("bank1: {}", "bank1: {failpoints: {prepare: explode}}"), "banks.bank1.failpoints.prepare"),
    (("members: 1", "members: 2"), "etcd.members: 2: a cluster needs an odd number"),
    (("admin: {bank: bank1, role: admin}", "admin: {bank: bank1, role: root}"), "clients.admin.role"),
    (("alice: {bank: bank1,", "Alice!: {bank: bank1,"), "is not a usable name"),
    (("bob: {bank: bank2, ", "bob: {"), "clients.bob.bank: is required"),
    (("backoff: 200ms", "backoff: 200ms\n  log_max_bytes: lots"), "settings.log_max_bytes: 'lots' is not a size"),
    (("backoff: 200ms", "backoff: 200ms\n  log_max_bytes: 100"), "settings.log_max_bytes: 100 is out of range 4KB..1GB"),
    (("backoff: 200ms", "backoff: 200ms\n  log_max_bytes: 2GB"), "settings.log_max_bytes: 2GB is out of range"),
    (("backoff: 200ms", "backoff: 200ms\n  log_keep: -1"), "settings.log_keep: -1 is out of range 0..1000"),
    (("backoff: 200ms", "backoff: 200ms\n  log_keep: two"), "settings.log_keep: 'two' is not a whole number"),
    (("backoff: 200ms", "backoff: 200ms\n  log_format: xml"), "settings.log_format: 'xml' is not one of text, json"),
    (("warm_spares: false", "warm_spares: 2"), "settings.warm_spares: 2 must be true or false"),
])
def test_each_problem_names_the_field_and_why(tmp_path, change, expected):
    old, new = change
    assert old in SMALL_TOPOLOGY
    problems = problems_of(tmp_path, SMALL_TOPOLOGY.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


def test_restart_no_as_yaml_writes_it_is_the_policy_no(tmp_path):
    """An unquoted `restart: no` is the boolean false to YAML 1.1: it means the policy `no`."""
    path = tmp_path / "topology.yaml"
    path.write_text(SMALL_TOPOLOGY.replace("bank1: {}", "bank1: {restart: no}").replace("bank2: {}", "bank2: {restart: 'no'}"))
    t = topology.load(path)
    assert t.node("bank1").restart is topology.RestartPolicy.NO and t.node("bank2").restart is topology.RestartPolicy.NO
    assert t.node("bank1").kind is topology.NodeKind.BANK and t.node("gateway").restart == "on-failure"
    assert "restart: 'no'" in t.to_yaml() or "restart: \'no\'" in t.to_yaml()
    problems = problems_of(tmp_path, SMALL_TOPOLOGY.replace("bank1: {}", "bank1: {restart: yes}"))
    assert any("banks.bank1.restart: True is not one of always, on-failure, no" in p for p in problems), problems


def test_yaml_syntax_error_gives_the_line(tmp_path):
    problems = problems_of(tmp_path, "banks:\n  bank1: {port: 1\n gateway: [\n")
    assert len(problems) == 1 and "YAML syntax error" in problems[0] and "line" in problems[0]


def test_all_problems_are_reported_at_once(tmp_path):
    text = SMALL_TOPOLOGY.replace("bank1: {}", "bank1: {colour: red}").replace('"50.00"', '"-1"')
    problems = problems_of(tmp_path, text)
    assert len(problems) == 2, problems


def test_cli_refuses_a_bad_topology_with_exit_2_and_starts_nothing(deployment):
    d = deployment(SMALL_TOPOLOGY.replace("bob: {bank: bank2", "bob: {bank: nowhere"))
    result = d.run("up", "-d")
    assert result.returncode == 2
    assert "clients.bob.bank: unknown bank 'nowhere'" in result.stderr
    assert not (d.home / "state").exists() and not (d.home / "certs").exists()
    assert processes_of(d.home) == []


def test_missing_topology_is_a_clear_error(tmp_path):
    import subprocess

    from tests.helpers import STRIFE
    result = subprocess.run([*STRIFE, "status"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "no topology file" in result.stderr


def test_a_directory_too_deep_for_the_control_socket_is_refused_up_front(tmp_path):
    import subprocess

    from tests.helpers import STRIFE
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "topology.yaml").write_text(SMALL_TOPOLOGY)
    result = subprocess.run([*STRIFE, "up", "-d"], cwd=deep, capture_output=True, text=True)
    assert result.returncode == 2 and "too long for the control socket" in result.stderr
    assert processes_of(deep) == []
