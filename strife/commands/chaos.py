"""`strife chaos`: inject faults into a running deployment and take them back."""
import json

from strife.commands import OK, deployment
from strife.core.durations import parse_duration
from strife.core.errors import BadInput, Failed
from strife.deployment.topology import NodeKind
from strife.launcher.control import ControlClient, Refused


def _node(topology, name):
    try:
        return topology.node(name).name
    except KeyError:
        raise BadInput(f"no node named {name!r} (nodes: {', '.join(n.name for n in topology.nodes)})") from None


def _admin(topology, node, work):
    """`work(admin)` against the node's NodeAdmin service (gRPC: imported only for failpoints)."""
    import asyncio

    import grpc

    from strife.launcher.chaos import AdminClient

    async def go():
        async with AdminClient(topology, node) as admin:
            return await work(admin)
    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as exc:
        raise Failed(f"{node} did not take it: {exc.code().name} {exc.details() or ''}") from None


def run(args):
    topology = deployment(args, must_run=True)
    if args.duration and not (args.pause or args.pause_host):
        raise BadInput("--for goes with --pause or --pause-host")
    if args.at and not args.pause:
        raise BadInput("--at goes with --pause")
    supervisor = ControlClient(topology.layout)
    if args.kill_host or args.pause_host or args.resume_host:
        from strife.commands import network_chaos
        return network_chaos.host_action(args, topology, supervisor)
    if args.partition or args.isolate or args.loss or args.latency or args.heal is not None:
        from strife.commands import network_chaos
        return network_chaos.network_fault(args, topology, topology.layout)
    if args.one_way or args.jitter:
        raise BadInput("--one-way goes with --partition, --jitter with --latency")
    if args.pause and args.at:
        from strife.launcher import chaos
        node = _node(topology, args.pause)
        chaos.check_step(topology, node, args.at)
        _admin(topology, node, lambda a: a.set(args.at, "pause"))
        print(f"{node} will freeze inside its next {args.at} (`strife chaos --resume {node}` releases it)")
    elif args.pause:
        node = _node(topology, args.pause)
        seconds = parse_duration(args.duration) if args.duration else None
        supervisor.pause(node, seconds)
        print(f"{node} paused" + (f" for {args.duration}" if seconds else f" (`strife chaos --resume {node}`)"))
    elif args.resume:
        node = _node(topology, args.resume)
        try:
            supervisor.resume(node)
            refused = None
        except Refused as exc:  # not paused by a signal; it may be frozen at a failpoint
            refused = exc
        cleared = []
        if topology.node(node).kind != NodeKind.ETCD:
            armed = _admin(topology, node, lambda a: a.list())
            cleared = [step for step, action in armed if action == "pause"]
            for step in cleared:
                _admin(topology, node, lambda a, s=step: a.clear(s))
        if refused is not None and not cleared:
            raise refused
        print(f"{node} resumed" + (f" (cleared pause at {', '.join(cleared)})" if cleared else ""))
    elif args.kill:
        node = _node(topology, args.kill)
        supervisor.kill(node)
        print(f"{node} killed; its restart policy ({topology.node(node).restart}) applies")
    elif args.restart:
        node = _node(topology, args.restart)
        supervisor.restart(node)
        print(f"{node} restarted")
    elif args.failpoint:
        from strife.launcher import chaos
        for spec in args.failpoint:
            node, step, action = chaos.parse_spec(spec)
            node = _node(topology, node)
            chaos.check_step(topology, node, step)
            _admin(topology, node, lambda a, step=step, action=action: a.set(step, action))
            print(f"{node}: {step} = {action}")
    elif args.clear:
        node, _, step = args.clear.partition(":")
        node = _node(topology, node)
        left = _admin(topology, node, lambda a: a.clear(step))
        still = ", ".join(f"{s}={a}" for s, a in left)
        print(f"{node}: cleared {step or 'all failpoints'}" + (f"; still armed: {still}" if left else ""))
    else:
        armed = {n.name: _admin(topology, n.name, lambda a: a.list()) for n in topology.nodes if n.kind != NodeKind.ETCD}
        if args.json:
            print(json.dumps({k: dict(v) for k, v in armed.items()}, indent=2))
        else:
            for name, points in armed.items():
                print(f"{name:<10} " + (", ".join(f"{s}={a}" for s, a in points) or "-"))
    return OK
