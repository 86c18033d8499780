"""A minimal gRPC echo server over the deployment's mTLS: the reference a payment is compared to.

`python -m strife.bench.echo --home DIR` prints its port on the first line, serves until SIGTERM,
or until the process that spawned it (`spawn`) dies, even by SIGKILL: a bench stopped in its echo
phase leaves no server behind.
"""
import argparse
import asyncio
import os
import signal
import subprocess
import sys

import grpc

from strife.core import lifeline
from strife.deployment import tls
from strife.deployment.identities import OPERATOR
from strife.rpc import echo_pb2_grpc


class EchoService(echo_pb2_grpc.EchoServicer):
    async def Echo(self, request, context):
        return request


async def serve(home, servicer=None):
    """Serve `servicer` (an echo by default) on a free local port, printed on stdout's first line,
    until SIGTERM or SIGINT."""
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(servicer or EchoService(), server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(home, OPERATOR))
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0.5)


def spawn(home, module="strife.checks.bench.echo", *args) -> subprocess.Popen:
    """The echo server for `home` (or another bench server: `module` with `args`), tied to this
    process's life (strife/core/lifeline.py); its port is the first line of its stdout. Call it
    from the main thread: the tie is to the spawning thread."""
    env = dict(os.environ, **{lifeline.ENV: str(os.getpid())})
    return subprocess.Popen([sys.executable, "-P", "-m", module, "--home", str(home), *args],
                            stdout=subprocess.PIPE, text=True, env=env)


def main(argv=None):
    lifeline.hold()  # first thing: dies with whoever spawned it
    os.umask(0o077)
    parser = argparse.ArgumentParser(description="gRPC echo over mTLS, the benchmark's reference")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.home))


if __name__ == "__main__":
    sys.exit(main())
