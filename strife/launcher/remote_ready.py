"""What a host's supervisor waits for before starting nodes that need nodes of other hosts: there
is no global start order across machines, so each host watches etcd for what its nodes need
(etcd up with its users and authentication in place; every bank registered)."""
import asyncio
import contextlib

from etcd3aio import prefix_range_end

from strife.deployment import discovery
from strife.deployment.identities import OPERATOR
from strife.launcher import etcd_access

POLL = 0.2  # seconds between looks


async def _until(topology, check):
    while True:
        with contextlib.suppress(Exception):  # not reachable yet, or still electing a leader
            async with discovery.client(topology, OPERATOR) as etcd:
                while True:
                    if await check(etcd):
                        return
                    await asyncio.sleep(POLL)
        await asyncio.sleep(POLL)


async def etcd_secured(topology):
    """etcd answers and its authentication is on (the host of the first member turns it on, then
    writes etcd_access.SECURED_KEY: etcd 3.4 has no AuthStatus to ask)."""
    async def secured(etcd):
        return bool((await etcd.kv.get(etcd_access.SECURED_KEY, timeout=2)).kvs)
    await _until(topology, secured)


async def banks_registered(topology):
    """Every bank of the topology has registered its address."""
    wanted = {b.name for b in topology.of_kind("bank")}

    async def registered(etcd):
        prefix = discovery.BANKS_PREFIX
        answer = await etcd.kv.get(prefix, range_end=prefix_range_end(prefix), timeout=2)
        return wanted <= {kv.key.decode()[len(prefix):] for kv in answer.kvs}
    await _until(topology, registered)


WAITS = {"etcd": etcd_secured, "bank": banks_registered}
