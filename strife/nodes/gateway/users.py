"""The gateway's user directory: who exists, at which bank, in which role, and their password check."""
import asyncio
import concurrent.futures

import grpc

from strife import passwords

USER_HEADER, PASSWORD_HEADER = "x-strife-user", "x-strife-password"


class Users:
    def __init__(self, store):
        self.store = store
        self.cache = passwords.VerifiedCache()
        # scrypt is slow and takes 16 MB on purpose: one thread for it keeps the event loop free
        # without every pool thread keeping its own 16 MB arena
        self._scrypt = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scrypt")

    async def _off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._scrypt, fn, *args)

    async def add(self, name, bank, role, password):
        salt, digest = await self._off_loop(passwords.hash_password, password)
        return await self.store.add_user(name, bank, role, salt, digest)

    async def change_password(self, name, password):
        salt, digest = await self._off_loop(passwords.hash_password, password)
        await self.store.set_password(name, salt, digest)
        self.cache.forget(name)

    def seed(self, topology, credentials):
        """Topology clients, hashed from the demo credentials file, on the gateway's first start."""
        for client in topology.of_kind("client"):
            if self.store.user(client.name) is None and client.name in credentials:
                salt, digest = passwords.hash_password(credentials[client.name])
                self.store.add_user_now(client.name, client.bank, client.role, salt, digest)

    async def check(self, name, password):
        if self.cache.hit(name, password):
            return True
        user = self.store.user(name)
        if user is None or not await self._off_loop(passwords.verify, password, user.salt, user.hash):
            return False
        self.cache.remember(name, password)
        return True

    async def authenticate(self, identity, metadata, context, method):
        """For client-facing methods: the user named in metadata is the certificate's, and the password fits."""
        if not method.startswith("/strife.clgw."):
            return
        name = metadata.get(USER_HEADER)
        if not name:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"no {USER_HEADER} in the request metadata")
        if name != identity.name:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"user {name[:64]!r} does not match the certificate of {identity.name!r}")
        if not await self.check(name, metadata.get(PASSWORD_HEADER, "")):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong user name or password")
