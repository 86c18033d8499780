"""The call log's cost per call, printed as JSON: not a test, nothing is asserted.

    .venv/bin/python -m tests.measure_logging [calls]

A record per RPC is on every node's hot path. This times the CallLogInterceptor's wrapping of a
handler that does nothing, with the node's real log configuration (strife/core/log_setup.py) writing
to a file, in text and in JSON, against the same wrapping without a log line. CPU time of the
process (user + system), best of five rounds, in microseconds per call; each format runs in a
fresh process.
"""
import asyncio
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROUNDS = 5


class _Context:
    def auth_context(self):
        return {}

    def code(self):
        return None


def measure(fmt, calls):
    from strife.core import log_setup
    from strife.deployment.topology import MAX_LOG_BYTES, Settings
    from strife.nodes.interceptors import CallLogInterceptor
    from strife.rpc import cl_gw_pb2 as cl

    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "gateway.log"
        log_setup.configure(path, "gateway", Settings(log_format=fmt, log_max_bytes=MAX_LOG_BYTES))  # no rotation
        request = cl.InitiateTransactionRequest(txn_id="3f2a8c1e-5b7d-4e9a-8c1f-2d3e4f5a6b7c", payee="bob",
                                                amount_minor=150)
        logged = CallLogInterceptor("gateway")._logged("InitiateTransaction")

        async def handler(request, context):
            return None

        async def bare(behaviour, request, context):
            return await behaviour(request, context)

        async def rounds(wrapper):
            best = float("inf")
            for _ in range(ROUNDS):
                began = time.process_time()
                for _ in range(calls):
                    await wrapper(handler, request, _Context())
                best = min(best, (time.process_time() - began) / calls * 1e6)
            return round(best, 2)

        async def both():
            return await rounds(bare), await rounds(logged)

        without, with_log = asyncio.run(both())
        size = path.stat().st_size / (ROUNDS * calls)
    return {"format": fmt, "us_per_call_without_log": without, "us_per_call_with_log": with_log,
            "log_us_per_call": round(with_log - without, 2), "bytes_per_record": round(size, 1)}


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20000
    if len(sys.argv) > 2:  # the child: one format
        print(json.dumps(measure(sys.argv[2], calls)))
        return
    results = [json.loads(subprocess.run([sys.executable, "-m", "tests.measure_logging", str(calls), fmt],
                                         capture_output=True, text=True, check=True).stdout)
               for fmt in ("text", "json")]
    print(json.dumps({"calls_per_round": calls, "rounds": ROUNDS, "results": results}, indent=2))


if __name__ == "__main__":
    main()
