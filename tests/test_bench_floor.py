"""`strife bench --floor`'s stand-ins take a payment's shape: a same-bank call is one durable row at
one bank; a cross-bank call is a row at each bank before its answer (the prepares) and one more at
each after it (phase 2). Real processes over the deployment's mTLS; no deployment needs to run."""
import asyncio
import os
import pathlib
import sqlite3
import subprocess
import sys

import pytest

from strife.checks.bench import floor
from strife.deployment import tls
from strife.deployment.identities import OPERATOR
from strife.rpc import echo_pb2, echo_pb2_grpc
from tests.helpers import wait_for

BANKS = ("floor bank a", "floor bank b")


def rows(stand_ins):
    """Rows written so far by each bank stand-in."""
    counts = []
    for name in BANKS:
        with sqlite3.connect(stand_ins.database(name)) as db:
            counts.append(db.execute("SELECT count(*) FROM calls").fetchone()[0])
    return counts


async def call(home, port, payload):
    creds = tls.channel_credentials(home, OPERATOR)
    async with tls.secure_channel(f"127.0.0.1:{port}", creds, OPERATOR) as channel:
        answer = await echo_pb2_grpc.EchoStub(channel).Echo(echo_pb2.EchoMessage(payload=payload), timeout=10)
    return answer.payload


def test_the_stand_ins_take_a_payments_shape_and_leave_nothing_behind(deployment):
    d = deployment()
    assert d.cli("certs").returncode == 0  # the operator's certificate: all the stand-ins need
    stand_ins = floor.Floor(d.home)
    try:
        port = stand_ins.start()
        assert asyncio.run(call(d.home, port, floor.SAME_BANK + b"one")) == floor.SAME_BANK + b"one"
        assert rows(stand_ins) == [1, 0]  # one bank, one durable row, nothing else
        asyncio.run(call(d.home, port, floor.CROSS_BANK + b"two"))
        # the prepares before the answer, phase 2 after it: two more rows at each bank
        wait_for(lambda: rows(stand_ins) == [3, 2], what="phase 2 at both bank stand-ins")
        # the same shapes sent on at once, unbatched (a lone caller's floor)
        asyncio.run(call(d.home, port, floor.SAME_BANK + floor.DIRECT))
        asyncio.run(call(d.home, port, floor.CROSS_BANK + floor.DIRECT))
        wait_for(lambda: rows(stand_ins) == [6, 4], what="an unbatched payment of each shape")
    finally:
        pids, scratch = stand_ins.pids(), stand_ins.scratch
        stand_ins.stop()
    assert set(pids) == {*BANKS, "floor decider", "floor gateway"}
    assert not pathlib.Path(scratch).exists()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_floor_gateway_needs_its_servers(tmp_path):
    result = subprocess.run([sys.executable, "-P", "-m", "strife.checks.bench.floor", "--home", str(tmp_path),
                             "--role", "gateway", "--scratch", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "needs --banks" in result.stderr
