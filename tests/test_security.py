"""Bad input and bad callers: each gets a clear error and nothing is half-applied. The `strife`
commands run in this process (`Deployment.cli`)."""
import asyncio

import grpc
import pytest

from strife.client.gateway_client import GatewayClient
from strife.deployment import certs, identities, tls, topology
from strife.deployment.layout import Layout
from strife.deployment.topology import load_deployment
from strife.rpc import cl_gw_pb2 as cl, cl_gw_pb2_grpc, gw_bank_pb2, gw_bank_pb2_grpc
from tests.helpers import SMALL_TOPOLOGY, balances, settled


@pytest.fixture(autouse=True)
def nothing_changes(live):
    before = settled(live.home)
    yield
    after = settled(live.home)
    assert {name: after[name] for name in before} == before
    assert sum(after.values()) == sum(before.values())  # new users here open with 0


@pytest.mark.parametrize("amount, message", [
    ("-5", "cannot be negative"), ("0", "more than zero"), ("1.234", "at most two decimals"),
    ("nan", "not an amount"), ("inf", "not an amount"), ("1e3", "not an amount"), ("ten", "not an amount"),
    ("1000.01", "above the maximum of 1000.00"),
])
def test_bad_amounts_on_the_command_line(live, amount, message):
    result = live.cli("client", "alice", "pay", "bob", amount)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("args, message", [
    (("pay", "nobody", "1"), "payee: unknown payee 'nobody'"),
    (("pay", "alice", "1"), "payee: payer and payee are the same user"),
    (("pay", "bob", "1", "--id", "not a valid id!"), "txn_id: must be"),
    (("pay", "b" * 1000, "1"), "payee: 'bbbbbbbb"),
    (("register", "dave", "--bank", "bank9"), "refused"),
])
def test_bad_requests_through_the_cli(live, args, message):
    result = live.cli("client", "alice", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_unknown_payer_has_no_identity(live):
    result = live.cli("client", "zed", "balance")
    assert result.returncode == 2 and "no certificate for 'zed'" in result.stderr


def test_admin_registers_a_user_with_an_unknown_bank_refused(live):
    result = live.cli("client", "admin", "register", "nobank", "--bank", "bank9")
    assert result.returncode == 2 and "unknown bank 'bank9'" in result.stderr
    assert "nobank" not in balances(live.home)


def call(home, cert_user, metadata_user, password, method="ViewBalance", request=None, credentials=None):
    """One raw RPC to the gateway with any certificate / metadata combination; returns the status code."""
    t = load_deployment(home)

    async def go():
        creds = credentials or tls.channel_credentials(home, cert_user)
        async with grpc.aio.secure_channel(t.of_kind("gateway")[0].address, creds) as channel:
            stub = cl_gw_pb2_grpc.ClientGatewayStub(channel)
            metadata = [("x-strife-user", metadata_user)] + ([("x-strife-password", password)] if password else [])
            try:
                await getattr(stub, method)(request or cl.ViewBalanceRequest(), metadata=metadata, timeout=5)
                return grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
    return asyncio.run(go())


def password_of(home, user):
    import json
    return json.loads((home / "state" / "credentials.json").read_text())[user]


def test_the_right_certificate_and_password_work(live):
    assert call(live.home, "alice", "alice", password_of(live.home, "alice"))[0] == grpc.StatusCode.OK


def test_wrong_password(live):
    code, details = call(live.home, "alice", "alice", "not-the-password")
    assert code == grpc.StatusCode.UNAUTHENTICATED and "wrong user name or password" in details
    assert call(live.home, "alice", "alice", None)[0] == grpc.StatusCode.UNAUTHENTICATED
    result = live.cli("client", "alice", "balance", input=None)
    assert result.returncode == 0  # the real password still works


def test_certificate_of_another_user(live):
    code, details = call(live.home, "alice", "bob", password_of(live.home, "bob"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "does not match the certificate" in details


def test_no_client_certificate(live):
    ca = Layout(live.home).ca_cert(identities.INFRA).read_bytes()
    code, _ = call(live.home, None, "alice", password_of(live.home, "alice"),
                   credentials=grpc.ssl_channel_credentials(root_certificates=ca))
    assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake itself is refused


def test_certificate_from_another_ca(live, tmp_path):
    (tmp_path / "topology.yaml").write_text(SMALL_TOPOLOGY)
    certs.ensure(topology.load(tmp_path / "topology.yaml"))
    ca = Layout(live.home).ca_cert(identities.INFRA).read_bytes()  # trusts the server, but presents a foreign cert
    foreign = grpc.ssl_channel_credentials(root_certificates=ca,
                                           private_key=(tmp_path / "certs" / "alice.key").read_bytes(),
                                           certificate_chain=(tmp_path / "certs" / "alice.pem").read_bytes())
    code, _ = call(live.home, None, "alice", password_of(live.home, "alice"), credentials=foreign)
    assert code == grpc.StatusCode.UNAVAILABLE


def test_a_client_calling_an_admin_method(live):
    request = cl.RegisterClientRequest(username="mallory", bank="bank1", password="long-enough-pw",
                                       opening_deposit_minor=100000)
    code, details = call(live.home, "alice", "alice", password_of(live.home, "alice"), "RegisterClient", request)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "may not call RegisterClient" in details


def test_a_client_calling_a_bank_directly(live):
    t = load_deployment(live.home)

    async def go():
        async with grpc.aio.secure_channel(t.node("bank1").address,
                                           tls.channel_credentials(live.home, "alice")) as channel:
            stub = gw_bank_pb2_grpc.BankStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.InitiateTransaction(gw_bank_pb2.DecisionRequest(txn_ids=["x"]), timeout=5)
            return caught.value.code()
    assert asyncio.run(go()) == grpc.StatusCode.UNAVAILABLE  # banks trust only the infrastructure authority


def test_a_certificate_the_gateway_has_no_user_for(live):
    certs.issue(live.home, "ghost", "client")
    code, details = call(live.home, "ghost", "ghost", "whatever-password")
    assert code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("amount", [0, -100, 100001])
def test_bad_amounts_over_rpc(live, amount):
    async def go():
        async with GatewayClient(load_deployment(live.home), "alice") as client:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await client.pay("bob", amount, "some-id-1")
            return caught.value.code()
    assert asyncio.run(go()) == grpc.StatusCode.INVALID_ARGUMENT


def test_an_oversized_request_is_refused_unread(live):
    request = cl.InitiateTransactionRequest(txn_id="x", payee="p" * 100_000, amount_minor=1)
    code, _ = call(live.home, "alice", "alice", password_of(live.home, "alice"), "InitiateTransaction", request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_admin_registers_a_user_who_can_then_pay(live):
    result = live.cli("client", "admin", "register", "erin", "--bank", "bank2", "--deposit", "0")
    assert result.returncode == 0, result.stderr
    assert live.cli("client", "erin", "balance").returncode == 0
    again = live.cli("client", "admin", "register", "erin", "--bank", "bank2")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_a_user_changes_their_password(live):
    old = password_of(live.home, "carol")
    result = live.cli("client", "carol", "passwd")
    assert result.returncode == 0, result.stderr
    new = password_of(live.home, "carol")
    assert new != old
    assert call(live.home, "carol", "carol", old)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert call(live.home, "carol", "carol", new)[0] == grpc.StatusCode.OK
    short = live.cli("client", "carol", "passwd", "--password", "short")
    assert short.returncode == 2 and "8 to 128 characters" in short.stderr
    assert password_of(live.home, "carol") == new  # a refused change changes nothing
