"""Who is who in a deployment: every identity that holds a certificate, its role, and which of the
two authorities signs it. Plain names, no cryptography: making and reading certificates, and
listing who holds one in a topology, is certs.py.

Two trust domains: the infrastructure authority signs etcd members, banks, gateways and the
operator; the users authority signs users (client and admin). etcd and banks trust only the
first, so a user's certificate is refused at their TLS handshake; the gateway trusts both.
"""
OPERATOR = "operator"  # the launcher's own identity toward nodes and etcd
INFRA, USERS = "infra", "users"
CA_FILE = {INFRA: "infra-ca", USERS: "users-ca"}
CA_NAME = {INFRA: "Strife infrastructure CA", USERS: "Strife users CA"}
ROLES = {INFRA: frozenset({"etcd", "bank", "gateway", "operator"}), USERS: frozenset({"client", "admin"})}
# Every etcd member's certificate also carries this name: clients of a whole cluster verify it.
ETCD_SERVER_NAME = "etcd"
# Every gateway's certificate also carries this name: a user's one channel to all gateways pins it.
GATEWAY_SERVER_NAME = "gateway"
JWT_KEY = "etcd-jwt"   # etcd signs its auth tokens with this key pair (ES256)
LEGACY_CA = "ca"       # the single authority of deployments made before the split


def domain_of(role: str) -> str:
    return INFRA if role in ROLES[INFRA] else USERS


def trust_for(role: str) -> tuple[str, ...]:
    """The authorities a caller must trust to reach a node of this role (users' nodes are the clients)."""
    return (USERS,) if role in ROLES[USERS] else (INFRA,)
