"""Talking to the gateway as a user: mTLS with the user's certificate, name and password in metadata.

Used by the `strife client` commands and by the client node's outbox sender.
"""
from __future__ import annotations

from strife.core import headers, passwords
from strife.core.errors import BadInput
from strife.deployment import credentials, tls
from strife.deployment.layout import Layout
from strife.deployment.topology import Topology
from strife.rpc import cl_gw_pb2 as cl, cl_gw_pb2_grpc


class ClientSetupError(BadInput):
    """This user cannot talk to the gateway from here (no deployment, no certificate, no password)."""


def user_password(home, user, password=None):
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


class GatewayClient:
    """One user's channel to the gateway (its own event loop's): each call carries their name and password."""

    def __init__(self, topology: Topology, user: str, password: str | None = None) -> None:
        self.topology = topology
        self.user = user
        home = topology.home
        self.given = password is not None  # else the saved one, re-read when it changes (`passwd`)
        self.credentials = Layout(home).credentials
        self.seen = self._stamp()
        self.password = user_password(home, user, password)
        self.metadata = ((headers.USER, user), (headers.PASSWORD, self.password))
        gateway = topology.of_kind("gateway")[0]
        self.address = gateway.address
        self.channel = tls.secure_channel(self.address, tls.channel_credentials(home, user), gateway.name, options=[
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)])
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
        """pay(), and the gateway's stage timings of this payment in ms ({} when it gave none)."""
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
