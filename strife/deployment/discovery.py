"""etcd for Strife nodes: connect with mTLS, register under a kept-alive lease, watch a prefix."""
import asyncio
import contextlib
import logging
from collections.abc import Callable

import etcd3aio
import grpc.aio
from etcd3aio import prefix_range_end

from strife.core import tasks
from strife.deployment import tls

log = logging.getLogger(__name__)

BANKS_PREFIX = "/strife/banks/"
USERS_PREFIX = "/strife/users/"  # the user directory (strife/nodes/gateway/user_directory.py)
GATEWAYS_PREFIX = "/strife/gateways/"  # gateways register here (for operators; clients use the topology)
LEASE_TTL = 5  # seconds: how long a crashed bank stays listed


def client(topology, name, endpoints=None):
    """An unconnected etcd3aio client for node `name` of this deployment (to every member, or to
    the `endpoints` given, e.g. one member for its maintenance)."""
    args = tls.etcd_tls_args(topology.home, name) if topology.etcd.tls else {}
    if topology.etcd.endpoints:  # a cluster we did not make: its certificates name its own hosts
        args.pop("tls_server_name", None)
    endpoints = [e.split("://", 1)[-1] for e in (endpoints or topology.etcd_endpoints())]
    # A watch resumes within half a second of etcd coming back (etcd3aio waits up to 5 s).
    etcd = _Client(endpoints, watch_reconnect_backoff_seconds=0.05, watch_max_reconnect_backoff_seconds=0.5,
                   **args)
    _fit_channel(etcd, ours=not topology.etcd.endpoints)
    return etcd


# a node that serves metrics sets this: called with the name of each etcd operation it requests
count_request: Callable[[str], None] | None = None
ATTEMPT = 0.6  # seconds one etcd request may take before it is sent again, within the caller's timeout


class _Client(etcd3aio.Etcd3Client):
    """etcd3aio's client, with requests that are sent again (to the next member) when one attempt
    takes longer than ATTEMPT. A request a follower forwarded to a leader that has just died is lost,
    and etcd answers it only after its 5 s request timeout; meanwhile a new leader is elected in a
    few hundred milliseconds (launcher/etcd.py). Every request Strife makes is safe to repeat: puts
    of the same value, reads, and transactions guarded by a compare (a decision is written once)."""

    async def connect(self):
        await super().connect()
        # (not maintenance: a defragmentation may take longer than an attempt and must not be repeated)
        for service in (self.auth, self.cluster, self.kv, self.lease):
            assert service is not None  # made by connect()
            service._rpc = _in_attempts(service._rpc)  # etcd3aio 0.3 offers no per-attempt deadline


def _in_attempts(rpc):
    async def rpc_in_attempts(call, request, *, operation, timeout=None, max_attempts=None):
        if count_request is not None:
            count_request(operation)
        if timeout is None or timeout <= ATTEMPT:
            return await rpc(call, request, operation=operation, timeout=timeout, max_attempts=max_attempts)
        async with asyncio.timeout(timeout):
            while True:
                try:
                    return await rpc(call, request, operation=operation, timeout=ATTEMPT, max_attempts=max_attempts)
                except (TimeoutError, etcd3aio.EtcdTransientError, etcd3aio.EtcdConnectionError):
                    pass
                except grpc.aio.AioRpcError as error:
                    if not _behind(error):
                        raise
                await asyncio.sleep(0.02)
    return rpc_in_attempts


def _behind(error):
    """A member asked for a revision it has not applied yet: a read pinned to the revision another
    member answered with (decisions.read_records pages through one snapshot, and the round-robin
    channel sends each page to the next member). That member catches up, or the next answers."""
    return error.code() == grpc.StatusCode.OUT_OF_RANGE and "future revision" in (error.details() or "")


def _fit_channel(etcd, ours):
    """etcd3aio 0.3 takes no channel options: amend those its connection manager will use.

    Reconnect within 50-500 ms (gRPC's default backoff reaches 2 minutes), so a restarted member is
    used again at once; the round-robin channel already skips a member it cannot reach. With etcd
    we spawned (which allows it, see launcher/etcd.py), keepalive pings find a frozen member in
    3 s rather than 15 s; an external cluster keeps etcd3aio's pace, which any etcd accepts."""
    options = dict(etcd._manager.grpc_options)
    options.update({"grpc.initial_reconnect_backoff_ms": 50, "grpc.max_reconnect_backoff_ms": 500})
    if ours:
        options.update({"grpc.keepalive_time_ms": 2000, "grpc.keepalive_timeout_ms": 1000})
    etcd._manager.grpc_options = list(options.items())


class Registration:
    """Keeps `key = value` present under a lease while the node lives.

    A lease that expires (etcd restarted, the node was paused past the TTL) is replaced
    and the key written again, so a node is re-listed as soon as etcd answers. The key itself is
    watched: deleted or overwritten while the lease lives, it is written again at once.
    """

    def __init__(self, etcd, key, value, ttl=LEASE_TTL):
        self.etcd, self.key, self.value, self.ttl = etcd, key, value, ttl
        self.registered = asyncio.Event()
        self._lease = None
        self._task = None

    async def start(self):
        self._task = asyncio.create_task(self._run(), name=f"register {self.key}")
        await self.registered.wait()

    async def _run(self):
        while True:
            try:
                lease = await self.etcd.lease.grant(self.ttl, timeout=self.ttl)
                self._lease = lease.ID
                put = await self.etcd.kv.put(self.key, self.value, lease=lease.ID, timeout=self.ttl)
                self.registered.set()
                log.info("registered %s in etcd (lease %x)", self.key, lease.ID)
                await _first_of(self._keep_alive(lease.ID), self._guard(lease.ID, put.header.revision))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd away: try again shortly
                log.warning("etcd registration of %s failed: %s; retrying", self.key, exc)
            await asyncio.sleep(0.5)

    async def _keep_alive(self, lease_id):
        """Returns when the lease is gone for good; raises when etcd cannot be reached."""
        while True:
            await asyncio.sleep(max(0.5, self.ttl / 3))
            answer = await self._refreshed(lease_id)
            if answer is grpc.aio.EOF or answer.TTL <= 0:  # pyright: ignore[reportAttributeAccessIssue] (stubs omit EOF)
                log.warning("lease of %s expired; registering again", self.key)
                return

    async def _refreshed(self, lease_id):
        """One keep-alive's answer, within the lease's time. A member cut off from the leader, or a
        connection a partition killed that is not yet known dead (pings take up to 3 s), never
        answers; waiting for it let the lease lapse and unlisted the bank, whose payments were then
        refused (CI, around network faults). An attempt unanswered within ATTEMPT is made again on
        a new stream, which the round-robin channel gives to the next member."""
        async with asyncio.timeout(self.ttl):
            while True:
                call = self.etcd.lease.keep_alive(lease_id)
                try:
                    return await asyncio.wait_for(call.read(), timeout=ATTEMPT)
                except TimeoutError:
                    pass
                finally:
                    call.cancel()

    async def _guard(self, lease_id, revision):
        """Write the key again whenever someone else deletes or changes it; raises if the watch fails."""
        async for batch in self.etcd.watch.watch(self.key, start_revision=revision + 1):
            for event in batch.events:
                if event.type == event.DELETE or event.kv.value.decode() != self.value or event.kv.lease != lease_id:
                    log.warning("%s was %s by someone else; registering again", self.key,
                                "deleted" if event.type == event.DELETE else "changed")
                    await self.etcd.kv.put(self.key, self.value, lease=lease_id, timeout=self.ttl)

    async def withdraw(self):
        await tasks.cancel(self._task)
        if self._lease is not None:
            with contextlib.suppress(Exception):
                await self.etcd.lease.revoke(self._lease, timeout=2)


async def _first_of(*coroutines):
    """Run the coroutines together until the first one returns or raises; cancel the rest."""
    running = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise its exception, if any
    finally:
        for task in running:
            if not task.done():  # awaiting a failed one would raise again and leave the rest running
                await tasks.cancel(task)


class PrefixWatch:
    """A live dict of the keys under a prefix: one read at start, then the watch stream."""

    def __init__(self, etcd, prefix, on_change=None):
        """`on_change(name)`: called for each entry added, changed or removed after the first read."""
        self.etcd, self.prefix = etcd, prefix
        self.entries = {}
        self.ready = asyncio.Event()
        self._on_change = on_change or (lambda name: None)
        self._task = None

    async def start(self):
        """Returns once the keys have been read (however long etcd takes): `entries` is complete."""
        self._task = asyncio.create_task(self._run(), name=f"watch {self.prefix}")
        await self.ready.wait()

    async def _run(self):
        while True:
            try:
                answer = await self.etcd.kv.get(self.prefix, range_end=prefix_range_end(self.prefix), timeout=5)
                before, self.entries = self.entries, {kv.key.decode()[len(self.prefix):]: kv.value.decode()
                                                      for kv in answer.kvs}
                for name in set(before) | set(self.entries):  # what changed while the watch was down
                    if before.get(name) != self.entries.get(name) and self.ready.is_set():
                        self._on_change(name)
                self.ready.set()
                async for event_batch in self.etcd.watch.watch(
                        self.prefix, range_end=prefix_range_end(self.prefix),
                        start_revision=answer.header.revision + 1):
                    for event in event_batch.events:
                        name = event.kv.key.decode()[len(self.prefix):]
                        value = None if event.type == event.DELETE else event.kv.value.decode()
                        if value == self.entries.get(name):
                            continue  # e.g. written through by this process already
                        if value is None:
                            self.entries.pop(name, None)
                        else:
                            self.entries[name] = value
                        self._on_change(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch of %s interrupted: %s; resuming", self.prefix, exc)
                await asyncio.sleep(0.5)

    async def stop(self):
        await tasks.cancel(self._task)
