"""TLS material for one deployment: two authorities, then a key and certificate per identity
(who they are: identities.py).

A certificate's CN is the identity (node or user name), its OU the role, and its SAN the name
again (plus the host it serves on): a caller verifies the name of the server it meant, so an
address swapped in etcd leads to a refused handshake. Keys are written 0600 and never leave certs/.
"""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from strife.deployment.identities import (CA_FILE, CA_NAME, ETCD_SERVER_NAME, GATEWAY_SERVER_NAME, INFRA, JWT_KEY,
                                          LEGACY_CA, OPERATOR, USERS, domain_of)
from strife.deployment.layout import Layout
from strife.deployment.topology import NodeKind, Topology

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=7)




def identities(topology: Topology, registered=()) -> list[tuple[str, str, set[str]]]:
    """(name, role, names for the SAN) for everything that needs a certificate.

    `registered` lists users added at run time (by `strife client ADMIN register`) as (name, role).
    """
    out = []
    for node in topology.nodes:
        role = node.role if node.kind == NodeKind.CLIENT else node.kind
        names = {node.name, node.host}
        if node.kind == NodeKind.ETCD:
            names.add(ETCD_SERVER_NAME)
        if node.kind == NodeKind.GATEWAY:
            names.add(GATEWAY_SERVER_NAME)
        out.append((node.name, role, names))
    out.append((OPERATOR, "operator", {OPERATOR}))
    known = {name for name, _, _ in out}
    out.extend((name, role, {name}) for name, role in registered if name not in known)
    return out

def ensure(topology, force=False, registered=()):
    """Create what is missing or stale; keep what is valid. Returns the names (re)issued."""
    layout = topology.layout
    layout.certs.mkdir(mode=0o700, exist_ok=True)
    issued, authorities = [], {}
    for domain in (INFRA, USERS):
        key_path, cert_path = layout.ca_key(domain), layout.ca_cert(domain)
        if force or not _valid_ca(cert_path, key_path, domain):
            key = ec.generate_private_key(ec.SECP256R1())
            _write_key(key_path, key)
            cert_path.write_bytes(_ca_certificate(key, CA_NAME[domain]).public_bytes(serialization.Encoding.PEM))
            issued.append(CA_FILE[domain])
        authorities[domain] = _load_ca(layout, domain)
    if issued:
        force = True  # everything signed by an old authority is worthless now
        for path in (layout.cert(LEGACY_CA), layout.key(LEGACY_CA)):  # the single CA of an older layout, if any
            path.unlink(missing_ok=True)
    if force or not layout.key(JWT_KEY).exists():
        _write_jwt_key(layout)
    for name, role, names in identities(topology, registered):
        ca_key, ca_cert = authorities[domain_of(role)]
        if _issue(layout, name, role, names, ca_key, ca_cert, force):
            issued.append(name)
    return issued


def reissue(topology, name, registered=()):
    """A new key and certificate for the identity `name` from its current authority; its role, or
    None when the deployment has no such identity. Safe while running: the authority is the same,
    so the old certificate stays valid until its holder picks up the new one."""
    for identity, role, names in identities(topology, registered):
        if identity == name:
            layout = topology.layout
            ca_key, ca_cert = _load_ca(layout, domain_of(role))
            _issue(layout, name, role, names, ca_key, ca_cert, force=True)
            return role
    return None


def issue(home, name, role, force=False):
    """A certificate for one more identity (a user registered at run time) from its authority."""
    layout = Layout(home)
    ca_key, ca_cert = _load_ca(layout, domain_of(role))
    return _issue(layout, name, role, {name}, ca_key, ca_cert, force=force)


def _load_ca(layout, domain):
    key = serialization.load_pem_private_key(layout.ca_key(domain).read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(layout.ca_cert(domain).read_bytes())
    return key, cert


def _issue(layout, name, role, names, ca_key, ca_cert, force):
    """Write a key and certificate unless a valid one is there; True when written."""
    cert_path, key_path = layout.cert(name), layout.key(name)
    if not force and _valid_leaf(cert_path, key_path, ca_cert, role, names):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf_certificate(name, role, names, key, ca_key, ca_cert)
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return True


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def _write_key(path, key):
    _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def _write_jwt_key(layout):
    """etcd's token-signing key pair: with authentication on, etcd signs tokens instead of handing
    out unsigned 'simple' ones (Strife's callers authenticate by certificate and never use them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(layout.key(JWT_KEY), key)
    _write_private(layout.public_key(JWT_KEY), key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _ca_certificate(key, common_name):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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


def _san_entries(names):
    entries = []
    for name in sorted(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _leaf_certificate(name, role, names, key, ca_key, ca_cert):
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
            .add_extension(x509.SubjectAlternativeName(_san_entries(names)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))


def _fresh(cert):
    return cert.not_valid_after_utc - RENEW_BEFORE > _now()


def _valid_ca(cert_path, key_path, domain):
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    return _fresh(cert) and cert.public_key() == key.public_key() and issuer_name(cert) == CA_NAME[domain]


def _valid_leaf(cert_path, key_path, ca_cert, role, names):
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    have = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    return (_fresh(cert) and cert.public_key() == key.public_key() and set(names) <= have
            and subject_role(cert) == role)


def subject_name(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def subject_role(cert):
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return values[0].value if values else None


def issuer_name(cert):
    values = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return values[0].value if values else None


def domain_of_issuer(cert):
    """The trust domain whose authority signed `cert` (by name: the caller has verified the chain)."""
    return next((domain for domain, name in CA_NAME.items() if issuer_name(cert) == name), None)
