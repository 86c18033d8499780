"""The gateway's user directory: who exists, at which bank, in which role, and their password check.

Password guessing is bounded twice (design §7, issue 10 item 6):
- LoginLimiter: consecutive failures lock out the user, and separately the user as seen from one
  source address, for a time that doubles. No scrypt runs for a locked key.
- FairScheduler: scrypt runs on one thread, served round-robin per user, each user with a few
  checks waiting at most; so one user's flood delays another user's check by about one scrypt
  (one per other user with checks waiting), not by the length of the flood.
A password that already verified (VerifiedCache) never waits for scrypt.
"""
import asyncio
import math

import grpc

from strife.core import headers, passwords
from strife.nodes.gateway.fair_scheduler import FairScheduler, QueueFull
from strife.nodes.gateway.login_limits import LoginLimiter
from strife.observe import metrics

MAX_WAITING_CHECKS = 4  # per user: distinct passwords being tried at once; more is a flood
PUSHBACK = "grpc-retry-pushback-ms"  # gRPC's standard trailer for "retry after"


class TooManyAttempts(Exception):
    def __init__(self, message, seconds):
        super().__init__(message)
        self.seconds = seconds


def source_address(peer):
    """The address part of gRPC's peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000")."""
    kind, _, rest = (peer or "").partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return rest.rpartition(":")[0]
    return peer or "-"


def limit_keys(name, peer):
    """What failed logins are counted against: the user, and the user from this source address.

    The address alone is no key: users share one (loopback, NAT, a proxy), and one user's flood
    must never lock out another. The ip:port of the connection is no key either: a new connection
    gets a new port. Each connection carries exactly one user's certificate, so every attempt
    belongs to a user; the pair keeps counting an attacker at one address even while the real
    user's successes from elsewhere reset the user's own count.
    """
    return ("user", name), ("from", source_address(peer), name)


class Users:
    """`directory`: where users are (user_directory.py: etcd, shared by every gateway)."""

    def __init__(self, directory, limiter=None, scheduler=None):
        self.directory = directory
        self.cache = passwords.VerifiedCache()
        self.limiter = limiter or LoginLimiter()
        # scrypt is slow and takes 16 MB on purpose: one thread for it keeps the event loop free
        # without every pool thread keeping its own 16 MB arena
        self.scrypt = scheduler or FairScheduler(MAX_WAITING_CHECKS, thread_name="scrypt")
        self._checking = {}  # (name, keyed digest) -> the check under way: one scrypt for identical tries

    def user(self, name):
        return self.directory.user(name)

    async def lookup(self, name):
        """The user, also when registered at another gateway a moment ago (one etcd read then)."""
        return self.directory.user(name) or await self._fetch(name)

    def changed(self, name):
        """The user's record changed (at another gateway too): a remembered password may be stale."""
        self.cache.forget(name)

    async def add(self, name, bank, role, password):
        """True when created; False when the name was taken meanwhile (at any gateway)."""
        salt, digest = await self.scrypt.run(name, passwords.hash_password, password, bounded=False)
        return await self.directory.add(name, bank, role, salt, digest)

    async def change_password(self, name, password):
        salt, digest = await self.scrypt.run(name, passwords.hash_password, password, bounded=False)
        await self.directory.set_password(name, salt, digest)
        self.cache.forget(name)

    async def seed(self, topology, credentials, legacy=()):
        """Create-if-absent: the topology's clients, hashed from the demo credentials file, and
        `legacy` users (User rows of a gateway store made before the directory was in etcd)."""
        known = self.directory.names()
        for user in legacy:
            if user.name not in known:
                await self.directory.add(user.name, user.bank, user.role, user.salt, user.hash)
                known.add(user.name)
        for client in topology.of_kind("client"):
            if client.name not in known and client.name in credentials:
                salt, digest = await self.scrypt.run(client.name, passwords.hash_password,
                                                     credentials[client.name], bounded=False)
                await self.directory.add(client.name, client.bank, client.role, salt, digest)

    def close(self):
        self.scrypt.close()

    def _refuse_if_locked(self, name, keys):
        seconds = self.limiter.wait(*keys)
        if seconds > 0:
            raise TooManyAttempts(f"too many failed logins for {name}; try again in {math.ceil(seconds)}s", seconds)

    async def check(self, name, password, peer=None):
        """True if `password` is `name`'s; raises TooManyAttempts while locked out or flooding."""
        keys = limit_keys(name, peer)
        # checked before the cache too: else a lockout would leave a fast oracle for a cached password
        self._refuse_if_locked(name, keys)
        if self.cache.hit(name, password):
            self._count(keys, True)
            return True
        user = await self.lookup(name)
        if user is None:
            return self._count(keys, False)
        ok = await self._verify(name, password, user, keys)
        if ok:
            self.cache.remember(name, password)
        return ok

    async def _fetch(self, name):
        """A name unknown here may have been registered at another gateway a moment ago. One etcd
        read per such attempt; the login limits bound how many."""
        fetch = getattr(self.directory, "fetch", None)
        if fetch is None:
            return None
        try:
            return await fetch(name)
        except Exception:  # etcd away: unknown, as before
            return None

    def _count(self, keys, ok):
        if ok:
            self.limiter.succeeded(*keys)
        else:
            self.limiter.failed(*keys)
            metrics.LOGIN_FAILURES.inc()
        return ok

    async def _verify(self, name, password, user, keys):
        """scrypt, fairly scheduled; concurrent tries of the same password share one run (and count once)."""
        same = (name, self.cache.digest(password))
        check = self._checking.get(same)
        if check is None:
            check = self._checking[same] = asyncio.ensure_future(self.scrypt.run(
                name, passwords.verify, password, user.salt, user.hash,
                gate=lambda: self._refuse_if_locked(name, keys),  # locked while it waited: no scrypt
                then=lambda ok: self._count(keys, ok)))  # counted before the next check may start
            check.add_done_callback(lambda done: self._checked(same, done))
        try:
            return await asyncio.shield(check)  # one caller giving up does not cancel it for the others
        except QueueFull:
            raise TooManyAttempts(f"too many password checks waiting for {name}; try again in 1s", 1.0) from None

    def _checked(self, same, done):
        if self._checking.get(same) is done:
            del self._checking[same]
        if not done.cancelled():
            done.exception()  # retrieved here, so a check whose callers all left is not reported as lost

    async def authenticate(self, identity, metadata, context: grpc.aio.ServicerContext, method):
        """For client-facing methods: the user named in metadata is the certificate's, and the password fits."""
        if not method.startswith("/strife.clgw."):
            return
        name = metadata.get(headers.USER)
        if not name:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"no {headers.USER} in the request metadata")
        if name != identity.name:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"user {name[:64]!r} does not match the certificate of {identity.name!r}")
        try:
            ok = await self.check(name, metadata.get(headers.PASSWORD, ""), context.peer())
        except TooManyAttempts as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc),
                                trailing_metadata=((PUSHBACK, str(math.ceil(exc.seconds * 1000))),))
        if not ok:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong user name or password")
