"""Run the torture: workload and faults together, then heal, settle and audit."""
import asyncio
import contextlib
import os
import shutil
import time
import uuid

import grpc

from strife.checks import audit as audit_module
from strife.checks.torture import recovery, resources, schedule
from strife.checks.torture.workload import Workload
from strife.client.outbox import Outbox
from strife.deployment.topology import NodeKind
from strife.launcher import chaos, control
from strife.nodes.bank import ledger

OUTBOX_EVERY = 0.5     # seconds between payments queued through the outbox client
SETTLE_FOR = 90.0      # seconds to get a definite answer for every payment left without one
PROGRESS_EVERY = 60.0  # seconds between two progress lines while the load runs


class Torture:
    def __init__(self, topology, seconds, seed, concurrency=8, progress=None):
        self.topology, self.seconds, self.seed = topology, seconds, seed
        self.layout = topology.layout
        self.supervisor = control.ControlClient(self.layout)
        self.concurrency = concurrency
        self.progress = progress or (lambda text: None)
        self.nonce = uuid.uuid4().hex[:8]
        users = [c.name for c in topology.of_kind("client") if c.role == "client"]
        if len(users) < 2:
            raise ValueError("torture needs at least two clients with role client")
        self.users = users
        self.outbox_client = users[0]
        # network faults when the hosts are namespaces here that we may change (root, nftables)
        self.network = bool(topology.hosts) and os.geteuid() == 0 and shutil.which("nft") is not None \
            and self.layout.placement.exists()
        self.plan = schedule.plan(seed, seconds, topology, self.outbox_client, network=self.network)
        self.network_faults = []  # in force now, as strife/launcher/faults.py records them
        self.network_lock = asyncio.Lock()
        self.injected = []
        self.queued = []
        self.watching = []  # per applied fault: (record, task measuring until healthy)

    # ---- faults ----

    async def _status(self):
        return await asyncio.to_thread(self.supervisor.status)

    async def _admin(self, node, work):
        async with chaos.AdminClient(self.topology, node) as admin:
            return await work(admin)

    async def _pid(self, node):
        return (await self._status()).node(node).pid

    async def _inject(self, fault):
        pid_before, injected_at = None, time.monotonic()
        try:
            if fault.kind in recovery.KILLS:
                pid_before, injected_at = await self._pid(fault.node), time.monotonic()
            if fault.kind in schedule.NETWORK:
                await self._network_fault(fault)
            elif fault.kind == "pause":
                await asyncio.to_thread(self.supervisor.pause, fault.node, fault.duration)
            elif fault.kind in ("kill", "restart-etcd"):
                await asyncio.to_thread(self.supervisor.kill, fault.node)
            else:
                step, action = fault.action.split("=")
                await self._admin(fault.node, lambda a: a.set(step, action))
                asyncio.get_running_loop().call_later(
                    fault.duration, lambda: asyncio.ensure_future(self._clear(fault.node, step)))
            done, note = True, ""
        except control.Refused as exc:
            done, note = False, f" (not applied: {exc})"
        except grpc.aio.AioRpcError as exc:
            done, note = False, f" (not applied: {exc.code().name})"
        except OSError as exc:
            done, note = False, f" (not applied: {exc})"
        self.injected.append({"fault": fault.describe(), "applied": done})
        self.progress(fault.describe() + note)
        if fault.kind in schedule.NETWORK:
            return  # no node to watch: the nodes' own recovery shows in the commits
        record = {"fault": fault.describe(), "kind": fault.kind, "node": fault.node,
                  "node_kind": self.topology.node(fault.node).kind, "applied": done, "injected_at": injected_at}
        if done:
            self.watching.append((record, asyncio.create_task(recovery.until_healthy(
                self._status, fault, fault.node, injected_at, pid_before))))

    async def _network_fault(self, fault):
        from strife.launcher import faults
        if fault.kind == "partition":
            record = faults.partition(*fault.hosts)
        elif fault.kind == "isolate":
            record = faults.isolate(fault.hosts[0])
        else:
            record = faults.loss(fault.hosts[0], fault.percent)
        await self._set_network(self.network_faults + [record])
        asyncio.get_running_loop().call_later(
            fault.duration, lambda: asyncio.ensure_future(self._lift_network(record)))

    async def _lift_network(self, record):
        remaining = list(self.network_faults)
        if record in remaining:
            remaining.remove(record)
        await self._set_network(remaining)

    async def _set_network(self, wanted):
        from strife.launcher import faults
        async with self.network_lock:
            await asyncio.to_thread(faults.apply, self.topology, self.layout, wanted)
            self.network_faults = list(wanted)

    async def _clear(self, node, step=""):
        with contextlib.suppress(grpc.aio.AioRpcError, OSError):
            await self._admin(node, lambda a: a.clear(step))

    async def _faults(self, began):
        for fault in self.plan:
            delay = began + fault.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._inject(fault)

    async def _queue_through_outbox(self, stop, rng_seed):
        outbox = Outbox(self.layout.outbox(self.outbox_client))
        payees = [u for u in self.users if u != self.outbox_client]
        n = 0
        try:
            while not stop.is_set():
                txn = f"torture-{self.nonce}-outbox-{n}"
                outbox.add(txn, payees[n % len(payees)], 1 + (rng_seed + n) % 500)
                self.queued.append(txn)
                n += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), OUTBOX_EVERY)
        finally:
            outbox.close()

    # ---- heal and settle ----

    async def _heal(self):
        self.progress("healing: clearing failpoints and network faults, resuming paused nodes, waiting for every node")
        if self.network:
            await self._set_network([])
        for node in self.topology.nodes:
            if node.kind != NodeKind.ETCD:
                await self._clear(node.name)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = await self._status()
            for n in status.nodes:
                if n.state == "PAUSED":
                    with contextlib.suppress(control.Refused):
                        await asyncio.to_thread(self.supervisor.resume, n.name)
            if all(n.state == "RUNNING" for n in status.nodes):
                return True
            await asyncio.sleep(0.2)
        return False

    async def _settle_unknown(self, workload):
        """Ask again for every payment without a definite answer, as many at once as the load ran
        (a long run under faults leaves thousands), until each has one or the time is up."""
        deadline = time.monotonic() + SETTLE_FOR
        while (unknown := workload.unknown()) and time.monotonic() < deadline:
            queue = iter(unknown)

            async def asker():
                for sent in queue:
                    if time.monotonic() >= deadline:
                        return
                    await workload.settle(sent, timeout=5.0)
            await asyncio.gather(*(asker() for _ in range(self.concurrency)))
            if workload.unknown():
                await asyncio.sleep(0.5)

    async def _quiesce(self):
        """Every hold settled and every outbox delivered (in-doubt resolution takes up to hold_timeout)."""
        deadline = time.monotonic() + self.topology.settings.hold_timeout * 3 + 60
        outbox = Outbox(self.layout.outbox(self.outbox_client))
        try:
            while time.monotonic() < deadline:
                report = await audit_module.audit_async(self.topology)
                prepared = report.transactions.get("in_flight", 0)
                if prepared == 0 and not outbox.pending():
                    return True
                await asyncio.sleep(0.5)
            return False
        finally:
            outbox.close()

    def _check_answers(self, workload):
        """What clients were told must be what the ledgers say."""
        problems = []
        committed = set()
        for bank in self.topology.of_kind("bank"):
            snapshot = ledger.snapshot(self.layout.ledger(bank.name))
            committed |= {hold.txn_id for hold in snapshot.holds
                          if hold.direction == "DEBIT" and hold.state == ledger.COMMITTED}
            committed |= {txn for txn, outcome in snapshot.transfers.items() if outcome == ledger.COMMITTED}
        for sent in workload.sent:
            if sent.outcome == "committed" and sent.txn_id not in committed:
                problems.append(f"{sent.txn_id}: the client was told committed, but no bank applied it")
            if sent.outcome == "aborted" and sent.txn_id in committed:
                problems.append(f"{sent.txn_id}: the client was told aborted, but it was applied")
        outbox = Outbox(self.layout.outbox(self.outbox_client))
        for txn in self.queued:
            entry = outbox.get(txn)
            assert entry is not None  # queued rows are never deleted
            if entry.status == ledger.COMMITTED and txn not in committed:
                problems.append(f"{txn}: outbox says committed, but no bank applied it")
            if entry.status == ledger.ABORTED and txn in committed:
                problems.append(f"{txn}: outbox says aborted, but it was applied")
        outbox.close()
        return problems

    async def run(self):
        stop = asyncio.Event()
        self.progress(f"seed {self.seed}: {len(self.plan)} faults over {self.seconds:g}s, "
                      f"{self.concurrency} concurrent payers among {', '.join(self.users)}")
        async with Workload(self.topology, self.users, self.seed, self.nonce, self.concurrency) as workload:
            began = time.monotonic()
            sampler = resources.Sampler(self._status, self.layout, self.topology)
            tasks = [asyncio.create_task(workload.run(stop)), asyncio.create_task(self._faults(began)),
                     asyncio.create_task(self._queue_through_outbox(stop, self.seed)),
                     asyncio.create_task(sampler.run(stop))]
            await self._wait_reporting(workload, began)
            stop.set()
            await tasks[1]
            await asyncio.gather(tasks[0], tasks[2], tasks[3])
            ended = time.monotonic()
            recoveries = await self._recoveries(workload, began, ended)
            healed = await self._heal()
            self.progress(f"settling {len(workload.unknown())} payments without a definite answer")
            await self._settle_unknown(workload)
            quiet = await self._quiesce()
        report = await audit_module.audit_async(self.topology)
        problems = list(report.problems) + self._check_answers(workload)
        if not healed:
            problems.append("not every node was RUNNING again after healing")
        if not quiet:
            problems.append("holds or queued payments still unsettled after waiting")
        outcomes = [s.outcome for s in workload.sent]
        return {
            "seed": self.seed, "seconds": self.seconds, "ok": not problems, "problems": problems,
            "schedule": [f.describe() for f in self.plan], "injected": self.injected,
            "payments": {"sent": len(outcomes), "committed": outcomes.count("committed"),
                         "aborted": outcomes.count("aborted"), "unknown": outcomes.count("unknown"),
                         "through_outbox": len(self.queued)},
            "recovery": recoveries,
            "resources": sampler.report(len(outcomes)),
            "verify": report.to_dict(),
        }

    async def _wait_reporting(self, workload, began):
        """Sleep through the run, saying every minute how far it got (a soak runs for many)."""
        while (left := began + self.seconds - time.monotonic()) > 0:
            await asyncio.sleep(min(left, PROGRESS_EVERY))
            if time.monotonic() < began + self.seconds - 1:
                self.progress(f"{time.monotonic() - began:.0f}s of {self.seconds:g}s: {len(workload.sent)} payments sent")

    async def _recoveries(self, workload, began, ended):
        """For every fault, how long until its node was healthy and until a payment through it committed."""
        faults = []
        for record, watching in self.watching:
            healthy = await watching
            touches = recovery.toucher(self.topology, record["node"])
            commit = recovery.until_commit(workload.sent, touches, record["injected_at"])
            faults.append({**{k: v for k, v in record.items() if k != "injected_at"},
                           "healthy_s": round(healthy, 3) if healthy is not None else None,
                           "commit_s": round(commit, 3) if commit is not None else None})
        return {"faults": faults, "summary": recovery.summary(faults),
                "longest_commit_gap_s": round(recovery.longest_gap(workload.sent, began, ended), 3)}
