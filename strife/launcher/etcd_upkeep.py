"""Keeping the deployment's etcd small: its history compacted, and disk space given back when it pays.

etcd keeps every revision of every key until compaction: the members compact on their own
(`--auto-compaction-*`, strife/launcher/etcd.py), and the gateway deletes decisions once every bank
applied them. What compaction frees stays inside etcd's file until a defragmentation, which
blocks the member while it runs: so it runs member by member, and only when most of the file is
free and that is worth a pause (etcd's default quota is 2 GB; a full quota refuses every write).
"""
import asyncio
import logging

from strife.deployment import discovery
from strife.deployment.identities import OPERATOR

log = logging.getLogger(__name__)

CHECK_EVERY = 60.0             # seconds between looks at each member
DEFRAG_MIN_FREE = 32 * 2 ** 20  # bytes: less than this free is not worth a pause


async def check_member(topology, member, min_free=DEFRAG_MIN_FREE):
    """Defragment one member if at least half its file and `min_free` bytes are free; bytes given back."""
    async with discovery.client(topology, OPERATOR, endpoints=[member.address]) as etcd:
        assert etcd.maintenance is not None  # made by connect()
        status = await etcd.maintenance.status(timeout=5)
        free = status.dbSize - status.dbSizeInUse
        if free < min_free or status.dbSizeInUse * 2 > status.dbSize:
            return 0
        await etcd.maintenance.defragment(timeout=60)
        after = await etcd.maintenance.status(timeout=5)
    log.info("etcd member %s defragmented: %d -> %d bytes", member.name, status.dbSize, after.dbSize)
    return status.dbSize - after.dbSize


async def run(topology, report=lambda text: None, every=CHECK_EVERY):
    """Forever: look at each member in turn; a member that does not answer is looked at next time."""
    while True:
        await asyncio.sleep(every)
        for member in topology.of_kind("etcd"):
            try:
                freed = await check_member(topology, member)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("etcd upkeep of %s postponed: %s", member.name, exc)
                continue
            if freed:
                report(f"{member.name}: defragmented, {freed / 2 ** 20:.1f} MB given back")
