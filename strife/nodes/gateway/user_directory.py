"""The user directory every gateway shares: `/strife/users/<name>` in etcd = {bank, role, salt, hash}
(JSON; salt and scrypt hash in hex), readable and writable by gateways only (launcher/etcd_access.py).

Each gateway keeps a live copy through one prefix watch: no etcd read per request. A user is
created with create-if-absent (two gateways registering one name at once: one wins); a password
change writes the new hash, and every gateway sees it within the watch's delay (milliseconds) and
drops what it remembered of the old password (`on_change`).
"""
from __future__ import annotations

import json
from collections.abc import Callable

from strife.deployment import discovery
from strife.nodes.gateway.store import User

PREFIX = discovery.USERS_PREFIX
TIMEOUT = 5.0


def key(name: str) -> str:
    return f"{PREFIX}{name}"


def _encode(bank: str, role: str, salt: bytes, digest: bytes) -> str:
    return json.dumps({"bank": bank, "role": role, "salt": salt.hex(), "hash": digest.hex()}, separators=(",", ":"))


def _decode(name: str, value: str) -> User:
    doc = json.loads(value)
    return User(name, doc["bank"], doc["role"], bytes.fromhex(doc["salt"]), bytes.fromhex(doc["hash"]))


class UserDirectory:
    def __init__(self, etcd, on_change: Callable[[str], None] | None = None) -> None:
        self.etcd = etcd
        self.on_change = on_change or (lambda name: None)
        self.watch = discovery.PrefixWatch(etcd, PREFIX, on_change=lambda name: self._changed(name))
        self._parsed: dict[str, tuple[str, User]] = {}  # name -> (value it was parsed from, User)

    async def start(self) -> None:
        """Returns once every user has been read."""
        await self.watch.start()

    async def stop(self) -> None:
        await self.watch.stop()

    def _changed(self, name):
        self._parsed.pop(name, None)
        self.on_change(name)

    def user(self, name: str) -> User | None:
        value = self.watch.entries.get(name)
        if value is None:
            return None
        known = self._parsed.get(name)
        if known is None or known[0] != value:
            known = self._parsed[name] = (value, _decode(name, value))
        return known[1]

    async def fetch(self, name: str) -> User | None:
        """The user as etcd has it now: for a name this copy does not know yet (registered at another
        gateway a moment ago, its watch event still on the way)."""
        answer = await self.etcd.kv.get(key(name), timeout=TIMEOUT)
        if answer.kvs and name not in self.watch.entries:
            self.watch.entries[name] = answer.kvs[0].value.decode()
        return self.user(name)

    def names(self) -> set[str]:
        return set(self.watch.entries)

    async def add(self, name: str, bank: str, role: str, salt: bytes, digest: bytes) -> bool:
        """Create the user unless the name is taken (here or at another gateway); True when created."""
        kv = self.etcd.kv
        value = _encode(bank, role, salt, digest)
        reply = await kv.txn(compare=[kv.txn_compare_create_revision(key(name), 0)],
                             success=[kv.txn_op_put(key(name), value)], failure=[], timeout=TIMEOUT)
        if reply.succeeded:
            self.watch.entries[name] = value  # written through: this gateway knows at once
        return reply.succeeded

    async def set_password(self, name: str, salt: bytes, digest: bytes) -> None:
        user = self.user(name)
        if user is None:
            raise KeyError(name)
        value = _encode(user.bank, user.role, salt, digest)
        await self.etcd.kv.put(key(name), value, timeout=TIMEOUT)
        self.watch.entries[name] = value
        self._parsed.pop(name, None)
