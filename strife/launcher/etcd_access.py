"""Least privilege in the deployment's etcd: one etcd user per identity (etcd takes the user name
from the client certificate's CN), roles that grant exactly what each kind needs, then
authentication on. Nobody else (a user, a node of another kind) can read or write anything.

| who            | may write                                  | may read                          |
|----------------|--------------------------------------------|-----------------------------------|
| bank B         | /strife/banks/B, /strife/aborts/B/...      | those, decisions /strife/txn/...  |
| gateway        | payment records /strife/txn/...; users     | /strife/banks/..., and what it    |
|                | /strife/users/...; /strife/gateways/...;   | may write                         |
|                | deletes banks' aborts once phase 2 is done |                                   |
| operator, root | everything (etcd's root role)              | everything                        |

Run by the supervisor once the etcd members are healthy, before any bank starts; idempotent,
so a topology that gained a bank gets its user at the next `up`.
"""
import asyncio
import logging

from etcd3aio import PermissionType, prefix_range_end

from strife.core import decisions
from strife.deployment import discovery
from strife.deployment.identities import OPERATOR

log = logging.getLogger(__name__)
ROOT = "root"  # etcd refuses to enable authentication before a user of this name exists
READ, READWRITE = PermissionType.READ, PermissionType.READWRITE
# Written once users, roles and authentication are in place: what the other hosts' supervisors wait
# for (strife/launcher/remote_ready.py). Only root may read it, as everything outside the grants.
SECURED_KEY = "/strife/access/secured"


def _prefix(text):
    return (text, prefix_range_end(text))


def grants(topology):
    """{etcd user: (role, [(permission, key, range_end or None)])} for every node that talks to etcd."""
    out = {}
    for bank in topology.of_kind("bank"):
        out[bank.name] = (f"bank-{bank.name}", [
            (READWRITE, discovery.BANKS_PREFIX + bank.name, None),
            (READWRITE, *_prefix(decisions.abort_prefix(bank.name))),
            (READ, *_prefix(decisions.PREFIX)),
        ])
    for gateway in topology.of_kind("gateway"):
        out[gateway.name] = ("gateway", [
            (READWRITE, *_prefix(decisions.PREFIX)),
            (READWRITE, *_prefix(decisions.ABORTS)),  # to forget them; an abort is its to write anyway
            (READ, *_prefix(discovery.BANKS_PREFIX)),
            (READWRITE, *_prefix(discovery.USERS_PREFIX)),      # the user directory: gateways only
            (READWRITE, *_prefix(discovery.GATEWAYS_PREFIX)),  # its registration (one role for all gateways)
        ])
    return out


async def ensure(topology, attempts=20):
    """Users, roles and authentication as `grants` says, retried while etcd settles."""
    for attempt in range(attempts):
        try:
            async with discovery.client(topology, OPERATOR) as etcd:
                return await _ensure(etcd, grants(topology))
        except Exception as exc:  # a member still electing a leader: try again shortly
            if attempt == attempts - 1:
                raise
            log.debug("etcd access setup: %s; retrying", exc)
            await asyncio.sleep(0.1 * (attempt + 1))


async def _ensure(etcd, wanted):
    auth, kv = etcd.auth, etcd.kv
    users = set((await auth.user_list()).users)
    roles = set((await auth.role_list()).roles)
    for user, role in [(ROOT, ROOT), (OPERATOR, ROOT)] + [(u, r) for u, (r, _) in wanted.items()]:
        if user not in users:
            await auth.user_add(user, no_password=True)  # certificate-only: no password exists to guess
            users.add(user)
        if role != ROOT and role not in roles:
            await auth.role_add(role)
            roles.add(role)
        if role not in (await auth.user_get(user)).roles:
            await auth.user_grant_role(user, role)
    for user, (role, permissions) in wanted.items():
        for permission, key, range_end in permissions:
            await auth.role_grant_permission(role, key, range_end, perm_type=permission)
    await auth.auth_enable()  # a no-op when it is on already (etcd 3.4 has no AuthStatus to ask first)
    await kv.put(SECURED_KEY, "authentication on")
