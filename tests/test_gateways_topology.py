"""`gateways:` in the topology (issue 15): named gateways, the `gateway:` short form, one target for
all of them, and certificates that carry the common name `gateway`."""
import textwrap

import pytest

from strife.client.gateway_client import gateways_target
from strife.deployment import certs, topology
from tests.helpers import SMALL_TOPOLOGY


def load(tmp_path, text):
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text))
    return topology.load(path)


def test_named_gateways_load_round_trip_and_each_names_gateway_in_its_certificate(tmp_path):
    t = load(tmp_path, SMALL_TOPOLOGY.replace("gateway: {}", "gateways:\n  gw1: {port: 7301}\n  gw2: {}")
             .replace("backoff: 200ms", "backoff: 200ms\n  idempotency_retention: 90s"))
    assert [g.name for g in t.of_kind("gateway")] == ["gw1", "gw2"]
    assert t.settings.idempotency_retention == 90.0
    again = tmp_path / "again.yaml"
    again.write_text(t.to_yaml())
    reread = topology.load(again, home=tmp_path)
    assert reread.nodes == t.nodes and reread.settings == t.settings
    sans = {name: names for name, _, names in certs.identities(t)}
    assert {"gw1", "gateway"} <= sans["gw1"] and {"gw2", "gateway"} <= sans["gw2"]
    assert "gateway" not in sans["bank1"]


def test_the_short_form_is_one_gateway_named_gateway_with_a_day_of_retention(tmp_path):
    t = load(tmp_path, SMALL_TOPOLOGY)
    assert [g.name for g in t.of_kind("gateway")] == ["gateway"]
    assert t.settings.idempotency_retention == 3600  # a day would not fit etcd's quota at full load
    assert "gateway:" in t.to_yaml() and "gateways:" not in t.to_yaml()


@pytest.mark.parametrize("change, expected", [
    (("gateway: {}", "gateway: {}\ngateways: {gw1: {}}"), "gateways: give either `gateway:`"),
    (("gateway: {}", "gateways: {Gw1: {}}"), "gateways.Gw1: 'Gw1' is not a usable name"),
    (("gateway: {}", "gateways: {bank1: {}}"), "already used by banks.bank1"),
    (("gateway: {}", "gateways: {gateway: {}}"), "is reserved"),
    (("gateway: {}", ""), "gateway: is required"),
    (("gateway: {}", "gateways:"), "gateways: at least one gateway is needed"),
    (("backoff: 200ms", "idempotency_retention: forever"), "settings.idempotency_retention"),
])
def test_bad_gateway_sections_are_refused_naming_the_field(tmp_path, change, expected):
    with pytest.raises(topology.TopologyError) as caught:
        load(tmp_path, SMALL_TOPOLOGY.replace(*change))
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_one_grpc_target_names_every_gateway_by_address(tmp_path):
    t = load(tmp_path, SMALL_TOPOLOGY.replace("gateway: {}", "gateways:\n  gw1: {port: 7301}\n"
                                              "  gw2: {port: 7302, host: localhost}"))
    assert gateways_target(t.of_kind("gateway")) == "ipv4:127.0.0.1:7301,127.0.0.1:7302"
    six = load(tmp_path, SMALL_TOPOLOGY.replace("gateway: {}", "gateways:\n  gw1: {port: 7301, host: '::1'}"))
    assert gateways_target(six.of_kind("gateway")) == "ipv6:[::1]:7301"
