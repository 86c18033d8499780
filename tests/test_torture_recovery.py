"""The torture's recovery figures, from made-up answers and statuses (nothing started)."""
import asyncio

import pytest

from strife.checks.torture import recovery
from strife.checks.torture.schedule import Fault
from strife.checks.torture.workload import Sent
from strife.launcher.control import NodeStatus, Status
from tests.fake_supervision import topology


def sent(payer, payee, at, answered, outcome="committed"):
    s = Sent(f"t-{at}", payer, payee, 1, outcome, sent_at=at)
    s.answered_at = answered
    return s


def test_next_commit_counts_only_payments_sent_after_the_fault_through_the_node():
    t = topology()  # alice banks at bank1, bob at bank2
    through_bank2 = recovery.toucher(t, "bank2")
    answers = [sent("alice", "bob", 9.0, 10.5),           # sent before the fault
               sent("bob", "alice", 10.1, 10.4, "aborted"),
               sent("alice", "bob", 10.2, 10.9),           # the first through bank2
               sent("bob", "alice", 10.3, 11.5)]
    assert recovery.until_commit(answers, through_bank2, 10.0) == pytest.approx(0.9)
    assert recovery.until_commit(answers, recovery.toucher(t, "gateway"), 10.0) == pytest.approx(0.9)
    assert recovery.until_commit(answers, through_bank2, 12.0) is None
    assert recovery.longest_gap(answers, 8.0, 13.0) == pytest.approx(2.5)


def test_healthy_means_running_again_with_another_process_after_a_kill():
    answers = iter([[("RUNNING", 7)], [("STARTING", 8)], [("RUNNING", 8)]])

    async def status():
        return Status("ready", None, 1, "t.yaml", [NodeStatus("bank1", "bank", pid, state, "-", 0, None, "h:1", None)
                                                   for state, pid in next(answers)])

    async def main():
        loop_start = asyncio.get_running_loop().time()
        took = await recovery.until_healthy(status, Fault(0, "kill", "bank1"), "bank1",
                                            recovery.time.monotonic(), pid_before=7)
        return took, asyncio.get_running_loop().time() - loop_start
    took, real = asyncio.run(main())
    assert took is not None and took >= 2 * recovery.POLL and real < 1


def test_summary_gives_p50_and_max_per_kind_of_fault_and_node():
    faults = [{"kind": "kill", "node_kind": "bank", "applied": True, "healthy_s": h, "commit_s": c}
              for h, c in ((0.1, 0.2), (0.3, None), (0.2, 0.4))]
    faults.append({"kind": "kill", "node_kind": "gateway", "applied": False, "healthy_s": None, "commit_s": None})
    assert recovery.summary(faults) == {"kill bank": {
        "count": 3, "healthy_p50": 0.2, "healthy_max": 0.3, "healthy_missing": 0,
        "commit_p50": 0.3, "commit_max": 0.4, "commit_missing": 1}}
