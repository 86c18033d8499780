"""Talking to the gateways as a user: mTLS with the user's certificate, name and password in metadata.

One channel over every gateway of the deployment (the list comes from the resolved topology: users
have no etcd access), balanced round-robin, with calls that fail UNAVAILABLE sent again to another
gateway by gRPC itself (a service config retry policy). Every gateway's certificate carries the
common name `gateway`, which the channel pins. Used by the `strife client` commands, the client
node's outbox sender, bench and torture.
"""
from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

from strife.core import headers, passwords
from strife.core.errors import BadInput
from strife.deployment import credentials, tls
from strife.deployment.identities import GATEWAY_SERVER_NAME
from strife.deployment.layout import Layout
from strife.deployment.topology import Topology
from strife.rpc import cl_gw_pb2 as cl, cl_gw_pb2_grpc


class ClientSetupError(BadInput):
    """This user cannot talk to the gateway from here (no deployment, no certificate, no password)."""


def user_password(home: Path | str, user: str, password: str | None = None) -> str:
    """The password (`password`, else the saved one) of a user who can act from here: who has a
    certificate and a password. Raises ClientSetupError otherwise. `user` must be a valid name."""
    if not Layout(home).cert(user).exists():
        raise ClientSetupError(f"no certificate for {user!r} in {Layout(home).certs} (is {user!r} a client "
                               f"of this topology, or registered with `strife client ADMIN register`?)")
    password = password if password is not None else credentials.password(home, user)
    if password is None:
        raise ClientSetupError(f"no password for {user!r} in state/credentials.json")
    if not passwords.can_travel(password):
        raise ClientSetupError(f"password: the password of {user!r} is not printable ASCII and cannot be sent")
    return password


# Round-robin over the gateways; a call refused UNAVAILABLE (a gateway down, starting, or gone
# mid-call) is sent again, to the next gateway. Every ClientGateway call is safe to repeat: a
# payment carries its id, and the others read or are refused the second time (ALREADY_EXISTS).
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{"name": [{"service": "strife.clgw.ClientGateway"}],
                      "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                                      "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def _numeric(host: str, port: int) -> str:
    """host:port with the host as an address (gRPC's ipv4:/ipv6: targets take addresses only)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ClientSetupError(f"gateway host {host!r} cannot be resolved ({exc})") from None
        found.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first: one family for all
        address = ipaddress.ip_address(found[0][4][0])
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def gateways_target(gateways) -> str:
    """One gRPC target naming every gateway: `ipv4:127.0.0.1:7001,127.0.0.1:7002`."""
    addresses = [_numeric(g.host, g.port) for g in gateways]
    families = {a.startswith("[") for a in addresses}
    if len(families) > 1:
        raise ClientSetupError("the gateways' hosts mix IPv4 and IPv6 addresses; one channel takes one family")
    return f"{'ipv6' if families == {True} else 'ipv4'}:{','.join(addresses)}"


class GatewayClient:
    """One user's channel to the gateways (its own event loop's): each call carries their name and password.

    `gateway` names one gateway to talk to only that one (tests, and an operator's look at one node)."""

    def __init__(self, topology: Topology, user: str, password: str | None = None,
                 gateway: str | None = None) -> None:
        self.topology = topology
        self.user = user
        home = topology.home
        self.given = password is not None  # else the saved one, re-read when it changes (`passwd`)
        self.credentials = Layout(home).credentials
        self.seen = self._stamp()
        self.password = user_password(home, user, password)
        self.metadata = ((headers.USER, user), (headers.PASSWORD, self.password))
        gateways = [g for g in topology.of_kind("gateway") if gateway is None or g.name == gateway]
        self.address = ", ".join(g.address for g in gateways)
        self.channel = tls.secure_channel(gateways_target(gateways), tls.channel_credentials(home, user),
                                          GATEWAY_SERVER_NAME, options=[
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)])
        self.stub = cl_gw_pb2_grpc.ClientGatewayStub(self.channel)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    def _stamp(self):
        try:
            stat = self.credentials.stat()
            return stat.st_mtime_ns, stat.st_ino  # saved by rename: a new inode each time
        except OSError:
            return None

    def _current(self):
        """The metadata to send: after `strife client USER passwd` (even from another process,
        while this one runs as the client node), the new password."""
        if not self.given and (stamp := self._stamp()) != self.seen:
            self.seen = stamp
            try:
                self.password = user_password(self.topology.home, self.user)
                self.metadata = ((headers.USER, self.user), (headers.PASSWORD, self.password))
            except (ClientSetupError, OSError, ValueError):
                pass  # half-written or gone: keep what worked; the gateway says if it no longer does
        return self.metadata

    def _call(self, method, request, timeout):
        return method(request, metadata=self._current(), timeout=timeout)

    async def pay(self, payee: str, amount_minor: int, txn_id: str,
                  timeout: float = 10.0) -> cl.InitiateTransactionResponse:
        return await self._call(self.stub.InitiateTransaction, cl.InitiateTransactionRequest(
            txn_id=txn_id, payee=payee, amount_minor=amount_minor), timeout)

    async def pay_timed(self, payee: str, amount_minor: int, txn_id: str,
                        timeout: float = 10.0) -> tuple[cl.InitiateTransactionResponse, dict[str, float]]:
        """pay(), and the gateway's stage timings of this payment in ms ({} when it gave none), with
        `received` and `replied`, when its handler got the request and answered (wall clock, s)."""
        call = self.stub.InitiateTransaction(
            cl.InitiateTransactionRequest(txn_id=txn_id, payee=payee, amount_minor=amount_minor),
            metadata=self._current() + ((headers.STAGES, "1"),), timeout=timeout)
        answer = await call
        stages = dict((await call.trailing_metadata()) or ()).get(headers.STAGES, "")
        return answer, {name: float(ms) for name, _, ms in (part.partition("=") for part in stages.split(";")) if ms}

    async def balance(self, timeout: float = 10.0) -> cl.ViewBalanceResponse:
        return await self._call(self.stub.ViewBalance, cl.ViewBalanceRequest(), timeout)

    async def history(self, limit: int = 100, timeout: float = 10.0) -> cl.ViewTransactionHistoryResponse:
        return await self._call(self.stub.ViewTransactionHistory, cl.ViewTransactionHistoryRequest(limit=limit),
                                timeout)

    async def register(self, username: str, bank: str, password: str, deposit_minor: int = 0, full_name: str = "",
                       timeout: float = 10.0) -> cl.RegisterClientResponse:
        return await self._call(self.stub.RegisterClient, cl.RegisterClientRequest(
            username=username, bank=bank, password=password, opening_deposit_minor=deposit_minor,
            full_name=full_name), timeout)

    async def update(self, new_password: str = "", full_name: str = "",
                     timeout: float = 10.0) -> cl.UpdateClientDetailsResponse:
        return await self._call(self.stub.UpdateClientDetails, cl.UpdateClientDetailsRequest(
            new_password=new_password, full_name=full_name), timeout)
