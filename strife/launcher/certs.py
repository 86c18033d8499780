"""TLS material for one deployment: a CA, then a key and certificate per node, client and operator.

The certificate's CN is the identity (node or user name) and its OU the role
(etcd, bank, gateway, client, admin, operator), so a server can authorize a caller
from the verified certificate alone. Keys are written 0600 and never leave certs/.
"""
import datetime
import ipaddress
import os
import pathlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OPERATOR = "operator"  # the launcher's own identity toward nodes
VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=7)


def identities(topology):
    """(name, role, hosts) for everything that needs a certificate."""
    out = []
    for node in topology.nodes:
        role = node.role if node.kind == "client" else node.kind
        out.append((node.name, role, {node.host}))
    out.append((OPERATOR, "operator", set()))
    return out


def ensure(topology, force=False):
    """Create what is missing or stale; keep what is valid. Returns the names (re)issued."""
    directory = topology.home / "certs"
    directory.mkdir(mode=0o700, exist_ok=True)
    ca_key_path, ca_cert_path = directory / "ca.key", directory / "ca.pem"
    issued = []
    if force or not _valid_ca(ca_cert_path, ca_key_path):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        _write_key(ca_key_path, ca_key)
        ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        force = True  # everything signed by an old CA is worthless now
        issued.append("ca")
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    for name, role, hosts in identities(topology):
        if _issue(directory, name, role, hosts, ca_key, ca_cert, force):
            issued.append(name)
    return issued


def issue(home, name, role, hosts=()):
    """A certificate for one more identity (e.g. a client registered at run time) from the existing CA."""
    directory = pathlib.Path(home) / "certs"
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    return _issue(directory, name, role, set(hosts), ca_key, ca_cert, force=False)


def _issue(directory, name, role, hosts, ca_key, ca_cert, force):
    """Write a key and certificate unless a valid one is there; True when written."""
    sans = {"localhost", "127.0.0.1", *hosts}
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    if not force and _valid_leaf(cert_path, key_path, ca_cert, role, sans):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf_certificate(name, role, sans, key, ca_key, ca_cert)
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return True


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _write_key(path, key):
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def _ca_certificate(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Strife deployment CA")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5)).not_valid_after(_now() + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _san_entries(hosts):
    entries = []
    for host in sorted(hosts):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def _leaf_certificate(name, role, hosts, key, ca_key, ca_cert):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)])
    # Every identity is both a server (its own gRPC port) and a client (of etcd, the gateway, banks).
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5)).not_valid_after(_now() + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_agreement=True,
                                         content_commitment=False, data_encipherment=False,
                                         key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))


def _fresh(cert):
    return cert.not_valid_after_utc - RENEW_BEFORE > _now()


def _valid_ca(cert_path, key_path):
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    return _fresh(cert) and cert.public_key() == key.public_key()


def _valid_leaf(cert_path, key_path, ca_cert, role, hosts):
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    have = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    return (_fresh(cert) and cert.public_key() == key.public_key() and hosts <= have
            and subject_role(cert) == role)


def subject_name(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def subject_role(cert):
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return values[0].value if values else None


def paths(home, name):
    """(ca, cert, key) file paths for an identity."""
    directory = pathlib.Path(home) / "certs"
    return directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}.key"
