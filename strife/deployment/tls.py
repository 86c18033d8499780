"""mTLS for every hop: credentials from a deployment's certs/, the server name every caller
verifies, and the caller's verified identity.

Servers trust the infrastructure authority, and the gateway also the users' one. Callers trust
the authority of the server they call and pin its name (`grpc.ssl_target_name_override`): the
server's certificate must carry that name, whatever address led there.
"""
import contextvars
import functools
import ipaddress

import grpc

from strife.deployment.identities import ETCD_SERVER_NAME, INFRA, ROLES
from strife.deployment.layout import Layout


class Identity:
    """What a verified peer certificate says: who (CN), in which role (OU), signed by which authority."""

    __slots__ = ("name", "role", "domain")

    def __init__(self, name, role, domain):
        self.name, self.role, self.domain = name, role, domain

    def __repr__(self):
        return f"{self.name}({self.role})"


def _roots(home, domains):
    layout = Layout(home)
    return b"".join(layout.ca_cert(domain).read_bytes() for domain in domains)


def _pair(home, name):
    layout = Layout(home)
    return layout.cert(name).read_bytes(), layout.key(name).read_bytes()


def server_credentials(home, name, accept=(INFRA,)):
    """This identity as a server that requires a client certificate from one of `accept`."""
    cert, key = _pair(home, name)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=_roots(home, accept),
                                       require_client_auth=True)


def channel_credentials(home, name, trust=(INFRA,)):
    cert, key = _pair(home, name)
    return grpc.ssl_channel_credentials(root_certificates=_roots(home, trust), private_key=key,
                                        certificate_chain=cert)


def server_name_options(server_name):
    """Channel options that make the handshake fail unless the server's certificate names `server_name`."""
    return [("grpc.ssl_target_name_override", server_name)]


def secure_channel(address, credentials, server_name, options=()):
    """A channel to the node `server_name` at `address`: anyone else there is refused at the handshake."""
    return grpc.aio.secure_channel(address, credentials, options=[*options, *server_name_options(server_name)])


def etcd_tls_args(home, name):
    """Keyword arguments for etcd3aio.Etcd3Client: this identity, the infrastructure authority,
    and the name every etcd member's certificate carries."""
    cert, key = _pair(home, name)
    return {"ca_cert": _roots(home, (INFRA,)), "cert_key": key, "cert_chain": cert,
            "tls_server_name": ETCD_SERVER_NAME}


@functools.lru_cache(maxsize=1024)
def _identity_from_pem(pem):
    # cryptography only here, on a server's first call from each peer: a command that only
    # calls out never parses a certificate, and starts without it
    from cryptography import x509

    from strife.deployment.certs import domain_of_issuer, subject_name, subject_role
    cert = x509.load_pem_x509_certificate(pem)
    role, domain = subject_role(cert), domain_of_issuer(cert)
    if domain is None or role not in ROLES[domain]:
        return None  # e.g. an infrastructure role on a user's certificate: nobody we know
    return Identity(subject_name(cert), role, domain)


# The identity of the call this task serves, as (context, identity): found once per call, though
# the access check, the call log and the handler each ask (auth_context() copies the certificate).
_peer: contextvars.ContextVar[tuple[object, "Identity | None"]] = contextvars.ContextVar("strife_peer", default=(None, None))


def peer_identity(context):
    """The identity of the caller of a gRPC handler, from its verified client certificate."""
    known, identity = _peer.get()
    if known is context:
        return identity
    pems = context.auth_context().get("x509_pem_cert")
    identity = _identity_from_pem(pems[0]) if pems else None
    _peer.set((context, identity))
    return identity


def on_loopback(host: str) -> bool:
    """A host only this machine reaches: its endpoints need no TLS (metrics)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
