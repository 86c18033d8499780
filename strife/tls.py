"""mTLS for every hop: credentials from a deployment's certs/ and the caller's verified identity."""
import functools

import grpc
from cryptography import x509

from strife.launcher.certs import paths, subject_name, subject_role


class Identity:
    """What a verified peer certificate says: who (CN) and in which role (OU)."""

    __slots__ = ("name", "role")

    def __init__(self, name, role):
        self.name, self.role = name, role

    def __repr__(self):
        return f"{self.name}({self.role})"


def _read(home, name):
    ca, cert, key = paths(home, name)
    return ca.read_bytes(), cert.read_bytes(), key.read_bytes()


def server_credentials(home, name):
    ca, cert, key = _read(home, name)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(home, name):
    ca, cert, key = _read(home, name)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def etcd_tls_args(home, name):
    """Keyword arguments for etcd3aio.Etcd3Client with this identity's certificate."""
    ca, cert, key = _read(home, name)
    return {"ca_cert": ca, "cert_key": key, "cert_chain": cert}


@functools.lru_cache(maxsize=1024)
def _identity_from_pem(pem):
    cert = x509.load_pem_x509_certificate(pem)
    return Identity(subject_name(cert), subject_role(cert))


def peer_identity(context):
    """The identity of the caller of a gRPC handler, from its verified client certificate."""
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if not pems:
        return None
    return _identity_from_pem(pems[0])
