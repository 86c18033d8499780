"""Certificates: two authorities per deployment, a verified chain per identity, private keys 0600, reuse and renewal."""
import stat

from cryptography import x509

from strife.deployment import certs, identities, topology
from strife.deployment.layout import Layout
from tests.helpers import SMALL_TOPOLOGY


def make(tmp_path, text=SMALL_TOPOLOGY):
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return topology.load(path)


def load_cert(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_identity_has_a_cert_signed_by_the_ca_with_its_name_and_role(tmp_path):
    t = make(tmp_path, SMALL_TOPOLOGY.replace("bank2: {}", "bank2: {host: bank2.example}"))
    issued = certs.ensure(t)
    names = [n.name for n in t.nodes] + [identities.OPERATOR]
    assert set(issued) == {"infra-ca", "users-ca", *names}
    users = {"admin", "alice", "bob"}
    for name in names:
        cert = load_cert(tmp_path / "certs" / f"{name}.pem")
        domain = identities.USERS if name in users else identities.INFRA
        cert.verify_directly_issued_by(load_cert(Layout(tmp_path).ca_cert(domain)))  # raises if the chain is broken
        assert certs.subject_name(cert) == name
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert name in san.get_values_for_type(x509.DNSName)  # what every caller verifies
        if name != identities.OPERATOR:  # and the host it serves on
            host = t.node(name).host
            assert host in [str(v) for v in san.get_values_for_type(x509.IPAddress) + san.get_values_for_type(x509.DNSName)]
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usages
        assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usages
    roles = {name: certs.subject_role(load_cert(tmp_path / "certs" / f"{name}.pem")) for name in names}
    assert roles == {"etcd": "etcd", "bank1": "bank", "bank2": "bank", "gateway": "gateway",
                     "admin": "admin", "alice": "client", "bob": "client", "operator": "operator"}
    bank2 = load_cert(tmp_path / "certs" / "bank2.pem")
    assert "bank2.example" in bank2.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_private_keys_are_owner_only(tmp_path):
    t = make(tmp_path)
    certs.ensure(t)
    keys = list((tmp_path / "certs").glob("*.key"))
    assert len(keys) == len(t.nodes) + 4  # nodes, operator, two authorities, etcd's token key
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_valid_certs_are_reused_and_force_renews_them(tmp_path):
    t = make(tmp_path)
    certs.ensure(t)
    before = (tmp_path / "certs" / "bank1.pem").read_bytes()
    assert certs.ensure(t) == []
    assert (tmp_path / "certs" / "bank1.pem").read_bytes() == before
    assert "bank1" in certs.ensure(t, force=True)
    assert (tmp_path / "certs" / "bank1.pem").read_bytes() != before


def test_a_cert_from_another_ca_is_replaced(tmp_path):
    t = make(tmp_path)
    certs.ensure(t)
    other = tmp_path / "other"
    other.mkdir()
    certs.ensure(make(other))
    (tmp_path / "certs" / "alice.pem").write_bytes((other / "certs" / "alice.pem").read_bytes())
    (tmp_path / "certs" / "alice.key").write_bytes((other / "certs" / "alice.key").read_bytes())
    assert certs.ensure(t) == ["alice"]
    load_cert(tmp_path / "certs" / "alice.pem").verify_directly_issued_by(load_cert(Layout(tmp_path).ca_cert(identities.USERS)))


def test_renewal_reissues_users_registered_at_run_time_and_drops_the_old_single_ca(tmp_path):
    t = make(tmp_path)
    certs.ensure(t)
    certs.issue(tmp_path, "dave", "client")
    (tmp_path / "certs" / "ca.pem").write_text("an authority from an older layout")
    issued = certs.ensure(t, force=True, registered=[("dave", "client")])
    assert "dave" in issued and not (tmp_path / "certs" / "ca.pem").exists()
    load_cert(tmp_path / "certs" / "dave.pem").verify_directly_issued_by(load_cert(Layout(tmp_path).ca_cert(identities.USERS)))


def test_a_node_cannot_take_the_name_of_a_user_registered_at_run_time(tmp_path):
    """A user registered as `bank3`, then a bank3 node added to the topology: the node's certificate
    would replace the user's, and the user's account could never be reached again. Refused (exit 2)
    with the node named, before any certificate is written."""
    from strife.deployment import credentials
    from tests.helpers import Deployment
    certs.ensure(make(tmp_path))
    certs.issue(tmp_path, "bank3", "client")
    credentials.set_password(tmp_path, "bank3", "a-password-1")
    users_cert = (tmp_path / "certs" / "bank3.pem").read_bytes()
    make(tmp_path, SMALL_TOPOLOGY.replace("bank2: {}", "bank2: {}\n  bank3: {}"))
    result = Deployment(tmp_path).cli("certs")
    assert result.returncode == 2, result
    assert "banks.bank3" in result.stderr and "registered" in result.stderr, result.stderr
    assert (tmp_path / "certs" / "bank3.pem").read_bytes() == users_cert
