"""Running a supervisor with its control socket: in the foreground (`strife up`) or detached
(`strife up -d` starts `python -m strife.launcher.daemon`, which outlives the command)."""
import argparse
import asyncio
import os
import signal

from strife.core import log_setup
from strife.deployment import topology as topology_model
from strife.deployment.layout import Layout
from strife.launcher import spawner
from strife.launcher.control_server import ControlServer
from strife.launcher.printer import LogPrinter


async def serve(topology, printer, echo_nodes, host=None):
    supervisor = spawner.build(topology, printer=printer, echo_nodes=echo_nodes, host=host)
    layout = topology.layout
    control = ControlServer(supervisor, layout.host_socket(host) if host else layout.socket)
    await control.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, supervisor.request_stop)
    try:
        await supervisor.run()
    finally:
        await control.close()
    return supervisor


def main(argv=None):
    os.umask(0o077)  # the supervisor's files, and every node and etcd it spawns, are its owner's alone
    parser = argparse.ArgumentParser(description="Strife supervisor daemon (started by `strife up -d`)")
    parser.add_argument("--home", required=True)
    parser.add_argument("--host", help="run only this host's nodes (a topology with hosts: one supervisor per host)")
    args = parser.parse_args(argv)
    layout = Layout(args.home)
    topology = topology_model.load(layout.resolved, home=layout.home)
    if args.host is not None and args.host not in {h.name for h in topology.hosts}:
        parser.error(f"--host: {args.host!r} is not one of the hosts "
                     f"{', '.join(h.name for h in topology.hosts) or '(the topology has none)'}")
    log = layout.host_supervisor_log(args.host) if args.host else layout.supervisor_log
    with log_setup.process_log(log, "supervisor", topology.settings):  # rotated like a node's
        asyncio.run(serve(topology, LogPrinter(), echo_nodes=False, host=args.host))


if __name__ == "__main__":
    main()
