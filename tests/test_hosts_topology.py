"""Hosts in the topology (no processes, no root): validation, addresses, ports, certificates'
names, the nftables rules each fault makes, and the merged status of several host supervisors."""
import pathlib
import textwrap

import pytest

from strife.deployment import certs, topology
from strife.launcher import faults, host_control, netns, ports

CLUSTER = pathlib.Path(__file__).parent.parent / "examples" / "cluster.yaml"

HOSTS = """
hosts: {h1: {}, h2: {}, h3: {}}
etcd: {members: 3}
banks:
  bank1: {host: h1}
  bank2: {host: h2}
gateway: {host: h3}
clients:
  alice: {bank: bank1}
  bob: {bank: bank2, host: h2}
"""


def load(tmp_path, text, name="topology.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return topology.load(path)


def problems_of(tmp_path, text):
    with pytest.raises(topology.TopologyError) as caught:
        load(tmp_path, text)
    return caught.value.problems


def test_nodes_run_on_named_hosts_at_their_address(tmp_path):
    t = load(tmp_path, HOSTS)
    addresses = {h.name: h.address for h in t.hosts}
    assert list(addresses) == ["h1", "h2", "h3"]
    assert {(n.name, n.host_name) for n in t.nodes} == {
        ("etcd1", "h1"), ("etcd2", "h2"), ("etcd3", "h3"),  # one member per host by default
        ("bank1", "h1"), ("bank2", "h2"), ("gateway", "h3"), ("alice", "h1"), ("bob", "h2")}
    assert all(n.host == addresses[n.host_name] for n in t.nodes)  # where it binds
    assert netns.one_subnet(t.hosts).prefixlen == 24 and len(set(addresses.values())) == 3


def test_the_example_cluster_is_valid(tmp_path):
    t = topology.load(CLUSTER)
    assert len(t.hosts) == 3 and len(t.of_kind("etcd")) == 3 and len(t.of_kind("bank")) == 3
    assert {m.host_name for m in t.of_kind("etcd")} == {"h1", "h2", "h3"}


def test_two_deployments_get_different_default_subnets(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = load(tmp_path / "a", HOSTS), load(tmp_path / "b", HOSTS)
    assert netns.one_subnet(a.hosts) != netns.one_subnet(b.hosts)
    assert netns.deployment_tag(a.home) != netns.deployment_tag(b.home)


def test_given_addresses_are_kept_and_the_bridge_takes_a_free_one(tmp_path):
    t = load(tmp_path, HOSTS.replace("hosts: {h1: {}, h2: {}, h3: {}}",
                                     "hosts: {h1: {address: 10.9.8.1}, h2: {address: 10.9.8.254}, "
                                     "h3: {address: 10.9.8.3}}"))
    assert [h.address for h in t.hosts] == ["10.9.8.1", "10.9.8.254", "10.9.8.3"]
    assert netns.bridge_address(netns.one_subnet(t.hosts), t.hosts) == "10.9.8.253"


def test_bad_hosts_are_named_with_the_reason(tmp_path):
    assert problems_of(tmp_path, HOSTS.replace("bank2: {host: h2}", "bank2: {host: h9}")) == [
        "banks.bank2.host: 'h9' is not one of the hosts h1, h2, h3"]
    assert problems_of(tmp_path, HOSTS.replace("h2: {}", "h2: {address: 10.1.1.2}")) == [
        "hosts.h1.address: give an address to every host or to none (then they share a private /24 "
        "chosen per deployment)"]
    bad = problems_of(tmp_path, HOSTS.replace("hosts: {h1: {}, h2: {}, h3: {}}",
                                              "hosts: {h1: {address: 10.1.1.1}, h2: {address: nope}, "
                                              "h3: {address: 10.1.1.1}, H4: {}}"))
    assert "hosts.h2.address: 'nope' is not an IPv4 address" in bad
    assert "hosts.h3.address: 10.1.1.1 already used by hosts.h1" in bad
    assert any(line.startswith("hosts: 'H4' is not a usable host name") for line in bad)
    assert problems_of(tmp_path, HOSTS.replace("members: 3}", "members: 3, hosts: [h1, h2]}")) == [
        "etcd.hosts: must list a host for each of the 3 members"]
    assert problems_of(tmp_path, HOSTS.replace("members: 3}", "members: 3, hosts: [h1, h1, h7]}")) == [
        "etcd.hosts: 'h7' is not one of the hosts h1, h2, h3"]
    no_hosts = HOSTS.replace("hosts: {h1: {}, h2: {}, h3: {}}", "").replace("members: 3}", "members: 3, hosts: [a, b, c]}")
    assert "etcd.hosts: needs a `hosts:` section naming the hosts" in problems_of(tmp_path, no_hosts)
    assert problems_of(tmp_path, HOSTS.replace("hosts: {h1: {}, h2: {}, h3: {}}", "hosts: []")) == [
        "hosts: must be a mapping of host names to their settings, e.g. {h1: {}, h2: {}}"]


def test_without_hosts_a_node_host_is_still_its_bind_address(tmp_path):
    t = load(tmp_path, HOSTS.replace("hosts: {h1: {}, h2: {}, h3: {}}", "").replace("members: 3", "members: 1")
             .replace("{host: h1}", "{host: 127.0.0.2}").replace("{host: h2}", "{}").replace("{host: h3}", "{}")
             .replace(", host: h2}", "}"))
    assert t.hosts == () and t.node("bank1").host == "127.0.0.2" and t.node("bank1").host_name is None
    assert t.node("gateway").host == "127.0.0.1"


def test_ports_are_per_host_and_fixed_ones_are_predictable(tmp_path):
    same_port = HOSTS.replace("bank1: {host: h1}", "bank1: {host: h1, port: 7100}").replace(
        "bank2: {host: h2}", "bank2: {host: h2, port: 7100}")
    t = load(tmp_path, same_port)  # two hosts, one port each: fine
    clash = same_port.replace("alice: {bank: bank1}", "alice: {bank: bank1, port: 7100}")
    assert problems_of(tmp_path, clash) == ["clients.alice.port: 7100 already used by bank1"]
    resolved, problems = ports.resolve(t)
    assert problems == []
    assert {(m.port, m.peer_port) for m in resolved.of_kind("etcd")} == {(2379, 2380)}
    assert resolved.node("bank1").port == 7100 and resolved.node("alice").port == 7001
    assert resolved.node("gateway").port == 7001 and resolved.node("bob").port == 7001
    assert ports.resolve(t)[0] == resolved  # the same on every machine that reads it


def test_the_resolved_form_names_hosts_and_reads_back_the_same(tmp_path):
    t, _ = ports.resolve(load(tmp_path, HOSTS))
    text = t.to_yaml()
    assert "host: h2" in text and "127.0.0.1" not in text
    again = load(tmp_path, text, "resolved.yaml")
    assert again.nodes == t.nodes and again.hosts == t.hosts
    again = load(tmp_path, t.to_json(), "resolved.json")  # the copy `up` writes for the nodes
    assert again.nodes == t.nodes and again.hosts == t.hosts


def test_certificates_carry_the_host_address(tmp_path):
    t = load(tmp_path, HOSTS)
    names = {name: sans for name, _, sans in certs.identities(t)}
    assert t.host("h2").address in names["bank2"] and "bank2" in names["bank2"]


def test_moving_hosts_to_another_subnet_moves_their_nodes(tmp_path):
    t = load(tmp_path, HOSTS)
    moved = t.with_host_addresses(topology.host_addresses(topology.subnet_at(5), ["h1", "h2", "h3"]))
    assert moved.host("h3").address == "10.64.5.3" and moved.node("gateway").host == "10.64.5.3"


def test_fault_rules_drop_where_packets_arrive(tmp_path):
    t = load(tmp_path, HOSTS)
    a = {h.name: h.address for h in t.hosts}
    both = [faults.partition("h1", "h2")]
    assert faults.rules_for("h1", t, both) == ['iifname "lo" accept', f"ip saddr {a['h2']} drop"]
    assert faults.rules_for("h2", t, both) == ['iifname "lo" accept', f"ip saddr {a['h1']} drop"]
    assert faults.rules_for("h3", t, both) == ['iifname "lo" accept']
    one_way = [faults.partition("h1", "h2", one_way=True)]
    assert faults.rules_for("h1", t, one_way) == ['iifname "lo" accept']  # h2's packets still reach h1
    assert faults.rules_for("h2", t, one_way)[1] == f"ip saddr {a['h1']} drop"
    alone = [faults.isolate("h3")]
    assert faults.rules_for("h3", t, alone)[1] == "drop"
    assert faults.rules_for("h1", t, alone)[1] == f"ip saddr {a['h3']} drop"
    lossy = [faults.loss("h2", 5.5)]
    assert faults.rules_for("h2", t, lossy)[1] == "numgen random mod 10000 < 550 drop"
    assert faults.rules_for("h1", t, lossy)[1] == f"ip saddr {a['h2']} numgen random mod 10000 < 550 drop"


def test_fault_arguments_are_checked():
    assert faults.parse_percent("5%") == 5 and faults.parse_percent("0.5") == 0.5
    for bad in ("0%", "101%", "-1", "five", "1e2"):
        with pytest.raises(faults.BadInput):
            faults.parse_percent(bad)
    with pytest.raises(faults.BadInput):
        faults.partition("h1", "h1")
    assert faults.describe(faults.partition("h1", "h2", True)) == "partition h1 -> h2"
    assert faults.describe(faults.latency("h2", 50, 10)) == "latency h2 50ms ±10ms"


def _answer(phase, *nodes):
    return {"ok": True, "phase": phase, "failed": None, "pid": 10, "topology": "t.yaml",
            "nodes": [{"name": n, "kind": "bank", "pid": 1, "state": "RUNNING", "health": "SERVING",
                       "restarts": 0, "uptime": 1.0, "address": "x:1", "last_exit": None, "host": h}
                      for n, h in nodes]}


def test_host_supervisors_answers_merge_into_one_status():
    placement = {"h1": ["bank1"], "h2": ["bank2"]}
    both = host_control.merge(placement, {"h1": _answer("ready", ("bank1", "h1")),
                                          "h2": _answer("ready", ("bank2", "h2"))})
    assert both.phase == "ready" and [n.host for n in both.nodes] == ["h1", "h2"]
    one = host_control.merge(placement, {"h1": _answer("ready", ("bank1", "h1")), "h2": None})
    assert one.phase == "partial" and one.node("bank2").state == "LOST" and one.supervisors == {"h1": 10, "h2": None}
    with pytest.raises(host_control.control.NotRunning):
        host_control.merge(placement, {"h1": None, "h2": None})
