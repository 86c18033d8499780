"""Two trust domains, servers verified by name, least privilege in etcd: a user's files reach only the
gateway, a bank can write only its own keys, and an address swapped in etcd leads nowhere."""
import asyncio
import datetime

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from etcd3aio.errors import EtcdPermissionDeniedError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from strife.core import decisions
from strife.deployment import certs, discovery, identities, tls
from strife.deployment.layout import Layout
from strife.deployment.topology import load_deployment
from strife.rpc import admin_pb2, admin_pb2_grpc, gw_bank_pb2 as gb, gw_bank_pb2_grpc
from tests.helpers import etcd_as, etcd_key, settled, wait_for


def health(home, identity, node, trust=(identities.INFRA,)):
    """The health of `node` asked with `identity`'s certificate: SERVING, or the gRPC error code."""
    t = load_deployment(home)
    spec = t.node(node)
    server_name = identities.ETCD_SERVER_NAME if spec.kind == "etcd" else spec.name

    async def ask():
        creds = tls.channel_credentials(home, identity, trust)
        async with tls.secure_channel(spec.address, creds, server_name) as channel:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
    return asyncio.run(ask())


@pytest.mark.parametrize("node", ["etcd", "bank1", "bank2"])
def test_a_users_certificate_is_refused_at_the_handshake_by_etcd_and_banks(live, node):
    assert health(live.home, identities.OPERATOR, node) == "SERVING"  # the same call with an infrastructure cert
    assert health(live.home, "alice", node) == grpc.StatusCode.UNAVAILABLE


def test_the_gateway_accepts_users_from_their_own_authority_only(live):
    assert health(live.home, "alice", "gateway") == "SERVING"
    # a certificate that claims an infrastructure role but was signed by the users' authority is nobody
    forge(live.home, "mallory", "operator", identities.USERS)
    t = load_deployment(live.home)

    async def list_failpoints():
        creds = tls.channel_credentials(live.home, "mallory")
        async with tls.secure_channel(t.node("gateway").address, creds, "gateway") as channel:
            try:
                await admin_pb2_grpc.NodeAdminStub(channel).ListFailpoints(admin_pb2.ListFailpointsRequest(), timeout=5)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()
    assert asyncio.run(list_failpoints()) == grpc.StatusCode.UNAUTHENTICATED


def forge(home, name, role, domain):
    """A certificate for `name` with any role, signed by the deployment's `domain` authority."""
    ca_key = serialization.load_pem_private_key((home / "certs" / f"{identities.CA_FILE[domain]}.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(Layout(home).ca_cert(domain).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certs._leaf_certificate(name, role, {name}, key, ca_key, ca_cert)
    certs._write_key(home / "certs" / f"{name}.key", key)
    (home / "certs" / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


async def outcome(call):
    try:
        await call
        return "allowed"
    except EtcdPermissionDeniedError:
        return "denied"


def test_each_kind_writes_only_what_its_role_grants_in_etcd(live):
    async def as_bank1(etcd):
        return {
            "another bank's registration": await outcome(etcd.kv.put("/strife/banks/bank2", "127.0.0.1:1")),
            "a commit decision": await outcome(etcd.kv.put(decisions.key("forged"), decisions.COMMIT)),
            "another bank's abort": await outcome(etcd.kv.put(decisions.abort_key("bank2", "forged"), "ABORT")),
            "its own abort": await outcome(decisions.abort_as_bank(etcd, "bank1", "trust-own-abort")),
            "the whole tree": await outcome(etcd.kv.get("/strife/", range_end=b"/strife0")),
        }
    assert etcd_as(live.home, as_bank1, "bank1") == {
        "another bank's registration": "denied", "a commit decision": "denied", "another bank's abort": "denied",
        "its own abort": "allowed", "the whole tree": "denied"}

    async def as_gateway(etcd):
        return {
            "a bank's registration": await outcome(etcd.kv.put("/strife/banks/bank1", "127.0.0.1:1")),
            "a bank's abort": await outcome(etcd.kv.put(decisions.abort_key("bank1", "forged"), "ABORT")),
            "a decision": await outcome(decisions.decide(etcd, "trust-gateway-decides", decisions.ABORT)),
        }
    assert etcd_as(live.home, as_gateway, "gateway") == {
        # a bank's abort is an abort the gateway may decide anyway; it deletes them once phase 2 is done
        "a bank's registration": "denied", "a bank's abort": "allowed", "a decision": "allowed"}


def test_a_commit_never_stands_beside_a_banks_abort(live):
    async def race(etcd_bank, etcd_gateway):
        first = await decisions.abort_as_bank(etcd_bank, "bank1", "trust-race")
        second = await decisions.decide(etcd_gateway, "trust-race", decisions.COMMIT, banks=("bank1", "bank2"))
        return first, second.outcome, await decisions.read(etcd_gateway, "trust-race", ("bank1", "bank2"))
    t = load_deployment(live.home)

    async def go():
        async with discovery.client(t, "bank1") as bank, discovery.client(t, "gateway") as gateway:
            return await race(bank, gateway)
    assert asyncio.run(go()) == (decisions.ABORT, decisions.ABORT, decisions.ABORT)


def test_a_deleted_registration_is_written_again_by_its_bank(live):
    key = discovery.BANKS_PREFIX + "bank2"
    before = etcd_key(live.home, key)
    assert before[0] is not None
    etcd_as(live.home, lambda etcd: etcd.kv.delete(key), identities.OPERATOR)
    assert wait_for(lambda: etcd_key(live.home, key)[0] is not None and etcd_key(live.home, key), timeout=10,
                    what="bank2 back in etcd") == before


class FakeBank(gw_bank_pb2_grpc.BankServicer):
    """What an attacker would run at a swapped address: votes YES to everything, counts its calls."""

    def __init__(self):
        self.calls = 0

    async def Exchange(self, request, context):
        self.calls += 1
        return gb.ExchangeResponse(votes=[gb.VoteResult(vote=gb.YES) for _ in request.prepare],
                                   commits=[gb.TxnResult(state=gb.COMMITTED) for _ in request.commit],
                                   aborts=[gb.TxnResult(state=gb.ABORTED) for _ in request.abort])


@pytest.mark.parametrize("impostor", ["bank2", "alice"])
def test_an_address_swapped_in_etcd_leads_to_a_refused_handshake(live, impostor):
    """The operator (or anyone who could write there) points bank1's key at a server holding another
    identity's certificate: bank2's (right authority, wrong name) or a user's (wrong authority)."""
    home = live.home
    before = settled(home)
    key = discovery.BANKS_PREFIX + "bank1"
    assert live.cli("chaos", "--pause", "bank1").returncode == 0  # so it does not write its key back at once
    fake = FakeBank()

    async def scenario():
        server = grpc.aio.server()
        gw_bank_pb2_grpc.add_BankServicer_to_server(fake, server)
        port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(home, impostor, (identities.INFRA,)))
        await server.start()
        try:
            t = load_deployment(home)
            async with discovery.client(t, identities.OPERATOR) as etcd:
                await etcd.kv.put(key, f"127.0.0.1:{port}")
            result = await asyncio.to_thread(live.run, "client", "alice", "pay", "bob", "1", "--wait", "20")
            return result
        finally:
            await server.stop(0)
    try:
        result = asyncio.run(scenario())
    finally:
        assert live.cli("chaos", "--resume", "bank1").returncode == 0
    assert result.returncode == 1 and "bank unavailable" in result.stderr, result.stdout + result.stderr
    assert fake.calls == 0
    assert settled(home) == before
    t = load_deployment(home)
    wait_for(lambda: etcd_as(home, lambda etcd: etcd.kv.get(key), identities.OPERATOR).kvs[0].value.decode()
             == t.node("bank1").address, timeout=15, what="bank1 registered again after its resume")
    # the gateway's channel to bank1 leaves its reconnect backoff (after the impostor's refused
    # handshakes) once it tries again: a balance read goes through bank1
    wait_for(lambda: live.cli("client", "alice", "balance").returncode == 0, timeout=30,
             what="the gateway reaching bank1 again")
    paid = live.cli("client", "alice", "pay", "bob", "1", "--wait", "20")
    assert paid.returncode == 0, paid.stdout + paid.stderr


def test_certificates_name_their_identity_and_come_from_their_domains_authority(live):
    home = live.home
    for name, domain in (("bank1", identities.INFRA), ("gateway", identities.INFRA), (identities.OPERATOR, identities.INFRA),
                         ("alice", identities.USERS), ("admin", identities.USERS)):
        cert = x509.load_pem_x509_certificate((home / "certs" / f"{name}.pem").read_bytes())
        authority = x509.load_pem_x509_certificate(Layout(home).ca_cert(domain).read_bytes())
        cert.verify_directly_issued_by(authority)
        assert name in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
        assert cert.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc)
    assert cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identities.CA_NAME[identities.USERS]
