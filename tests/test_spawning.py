"""Spawning from a process whose gRPC threads are busy, as the supervisor does (foreground or
detached): no gRPC fork handler runs, so it prints no fork warning and no child dies between fork
and exec (one foreground start in four used to lose a node that way: grpc/grpc#43055).

Hundreds of spawns through the supervisor's own `process.spawn` cost about a second, where the
same number of node starts took twenty whole deployments; test_launcher.py keeps a few real
foreground starts end to end."""
import subprocess
import sys
import textwrap

SPAWNS = 300
SIGNS = ("fork_posix.cc", "skipping fork() handlers", "epoll")

# Runs in a fresh interpreter: `import strife` first, as every entry point (`python -m strife`,
# `python -m strife.launcher.daemon`) does, then gRPC traffic on several threads while it spawns.
PROGRAM = textwrap.dedent(f"""
    import asyncio, os, shutil, sys
    import strife
    import grpc
    from strife.launcher import process

    async def echo(request, context):
        return request

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "t", {{"Echo": grpc.unary_unary_rpc_method_handler(echo)}})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{{port}}")
        call = channel.unary_unary("/t/Echo")
        done = asyncio.Event()

        async def traffic():
            while not done.is_set():
                await call(b"x", timeout=10)
        callers = [asyncio.ensure_future(traffic()) for _ in range(4)]
        await call(b"x", timeout=10)  # the poller and its threads are running
        true = shutil.which("true")
        codes = []
        for _ in range({SPAWNS}):
            line = process.Lifeline()  # a descriptor passed through, as to every node
            proc = await process.spawn([true], dict(os.environ), os.devnull, pass_fds=(line.child_fd,))
            line.spawned()
            codes.append(await proc.wait())
            line.close()
        done.set()
        await asyncio.gather(*callers)
        await channel.close()
        await server.stop(0)
        print(" ".join(map(str, codes)))

    asyncio.run(main())
""")


def test_hundreds_of_spawns_beside_live_grpc_threads_are_clean(tmp_path):
    result = subprocess.run([sys.executable, "-P", "-c", PROGRAM], cwd=tmp_path, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr
    codes = result.stdout.split()
    assert len(codes) == SPAWNS and set(codes) == {"0"}, codes  # no child died before its exec
    for sign in SIGNS:
        assert sign not in result.stderr, (sign, result.stderr)
