"""`strife verify` compares the etcd members' data (strife/checks/etcd_agreement.py): members that
disagree are a violation. Agreement on a real three-member cluster is checked in test_launcher.py
(and under torture in test_hosts_cluster.py); here, disagreement."""
import asyncio
import subprocess

import etcd3aio

from strife.checks import etcd_agreement
from strife.checks.etcd_agreement import MemberHash
from strife.deployment import topology
from strife.launcher import etcd as etcd_launcher
from strife.launcher.ports import _free
from tests.helpers import SMALL_TOPOLOGY, wait_for


def test_members_compacted_alike_must_hash_alike():
    same = [MemberHash("etcd1", 5, 111), MemberHash("etcd2", 5, 111), MemberHash("etcd3", 5, 111)]
    assert etcd_agreement.disagreements(40, same) == []
    forked = [MemberHash("etcd1", 5, 111), MemberHash("etcd2", 5, 222), MemberHash("etcd3", 5, 111)]
    [problem] = etcd_agreement.disagreements(40, forked)
    assert "up to revision 40" in problem and "etcd2 hash 222" in problem and "etcd1 hash 111" in problem
    # compacted at different revisions, their hashes cover different history: not comparable
    assert etcd_agreement.disagreements(40, [MemberHash("etcd1", 5, 111), MemberHash("etcd2", 9, 222)]) == []


def test_two_etcds_with_different_data_are_found_to_disagree(tmp_path):
    """Two real, separate etcds given as one outside cluster's endpoints stand for a cluster's members:
    the same writes, then the same number of writes with one value different (a forked member)."""
    binary = etcd_launcher.find_binary(topology.load(_topology(tmp_path, [])))
    endpoints, servers = [], []
    try:
        for i in range(2):
            client_port, peer_port = _free("127.0.0.1", 0), _free("127.0.0.1", 0)
            url = f"http://127.0.0.1:{client_port}"
            servers.append(subprocess.Popen(
                [binary, "--name", f"e{i}", "--data-dir", str(tmp_path / f"e{i}"), "--listen-client-urls", url,
                 "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                 "--initial-cluster", f"e{i}=http://127.0.0.1:{peer_port}", "--log-level", "error"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            endpoints.append(f"127.0.0.1:{client_port}")

        async def write(endpoint, value):
            async with etcd3aio.Etcd3Client([endpoint]) as etcd:
                await etcd.kv.put("/strife/txn/t1/decision", value, timeout=5)
                return True
        outside = topology.load(_topology(tmp_path, endpoints))
        for endpoint in endpoints:  # the same write to each: the same history
            wait_for(lambda: _quietly(write(endpoint, "ABORT")), what=f"etcd at {endpoint} written")
        found = asyncio.run(etcd_agreement.check(outside))
        assert found.compared == endpoints and found.left_out == {} and found.problems == []
        for endpoint, value in zip(endpoints, ("COMMIT", "ABORT")):  # then one has a COMMIT the other lacks
            assert _quietly(write(endpoint, value))
        found = asyncio.run(etcd_agreement.check(outside))
        assert found.compared == endpoints and found.left_out == {}
        [problem] = found.problems
        assert problem.startswith(f"etcd members disagree on their data up to revision {found.revision}: ")
        assert found.revision == 3
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


def _topology(tmp_path, endpoints):
    path = tmp_path / "topology.yaml"
    etcd = f"endpoints: [{', '.join(repr(e) for e in endpoints)}]" if endpoints else "members: 1"
    path.write_text(SMALL_TOPOLOGY.replace("members: 1", etcd))
    return path


def _quietly(coroutine):
    try:
        return asyncio.run(coroutine)
    except Exception:  # not listening yet
        return False
