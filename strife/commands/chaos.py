"""`strife chaos`: inject faults into a running deployment and take them back."""
import argparse
import asyncio
import json

import grpc

from strife.commands import FAILED, OK, UserError, add_file_option, deployment
from strife.core.durations import DurationError, parse_duration
from strife.core.failpoints import FailpointError
from strife.deployment.layout import Layout
from strife.launcher import chaos, control


def register(sub):
    p = sub.add_parser(
        "chaos", help="pause, kill or resume a node; arm failpoints at protocol steps",
        description="Faults on request, to watch two-phase commit hold. Examples:\n"
                    "  strife chaos --pause bank2 --for 5s     SIGSTOP bank2, SIGCONT after 5s\n"
                    "  strife chaos --pause bank2 --at prepare bank2 freezes inside its next prepare\n"
                    "  strife chaos --resume bank2             SIGCONT and clear its pause failpoints\n"
                    "  strife chaos --kill bank2               SIGKILL; the supervisor restarts it\n"
                    "  strife chaos --failpoint gateway:after-decision=crash\n"
                    "  strife chaos --clear gateway            remove every failpoint of the gateway\n"
                    "Failpoint actions: pause, delay:DURATION, error, crash.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_file_option(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--pause", metavar="NODE", help="freeze a node (SIGSTOP of its process group)")
    what.add_argument("--resume", metavar="NODE", help="unfreeze a node and clear its pause failpoints")
    what.add_argument("--kill", metavar="NODE", help="SIGKILL a node; its restart policy applies")
    what.add_argument("--restart", metavar="NODE", help="stop a node gracefully and start it again")
    what.add_argument("--failpoint", metavar="NODE:STEP=ACTION", action="append",
                      help="arm a failpoint (repeatable)")
    what.add_argument("--clear", metavar="NODE[:STEP]", help="remove a node's failpoints (or one of them)")
    what.add_argument("--list", action="store_true", help="show the armed failpoints of every node")
    p.add_argument("--for", dest="duration", metavar="DURATION", help="with --pause: resume after this long")
    p.add_argument("--at", metavar="STEP", help="with --pause: freeze inside this protocol step instead of now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def _node(topology, name):
    try:
        return topology.node(name).name
    except KeyError:
        raise UserError(f"no node named {name!r} (nodes: {', '.join(n.name for n in topology.nodes)})") from None


def _supervisor(topology, request):
    answer = control.call(Layout(topology.home).socket, request)
    if not answer["ok"]:
        raise UserError(answer["error"], FAILED)
    return answer


def _admin(topology, node, work):
    async def go():
        async with chaos.AdminClient(topology, node) as admin:
            return await work(admin)
    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as exc:
        raise UserError(f"{node} did not take it: {exc.code().name} {exc.details() or ''}", FAILED) from None


def run(args):
    topology = deployment(args, must_run=True)
    if (args.duration or args.at) and not args.pause:
        raise UserError("--for and --at go with --pause")
    try:
        return _dispatch(args, topology)
    except (FailpointError, DurationError) as exc:
        raise UserError(str(exc)) from None


def _dispatch(args, topology):
    if args.pause and args.at:
        node = _node(topology, args.pause)
        chaos.check_step(topology, node, args.at)
        _admin(topology, node, lambda a: a.set(args.at, "pause"))
        print(f"{node} will freeze inside its next {args.at} (`strife chaos --resume {node}` releases it)")
    elif args.pause:
        node = _node(topology, args.pause)
        seconds = parse_duration(args.duration) if args.duration else None
        _supervisor(topology, {"cmd": "pause", "node": node, "seconds": seconds})
        print(f"{node} paused" + (f" for {args.duration}" if seconds else f" (`strife chaos --resume {node}`)"))
    elif args.resume:
        node = _node(topology, args.resume)
        answer = control.call(Layout(topology.home).socket, {"cmd": "resume", "node": node})
        cleared = []
        if topology.node(node).kind != "etcd":
            armed = _admin(topology, node, lambda a: a.list())
            cleared = [step for step, action in armed if action == "pause"]
            for step in cleared:
                _admin(topology, node, lambda a, s=step: a.clear(s))
        if not answer["ok"] and not cleared:
            raise UserError(answer["error"], FAILED)
        print(f"{node} resumed" + (f" (cleared pause at {', '.join(cleared)})" if cleared else ""))
    elif args.kill:
        node = _node(topology, args.kill)
        _supervisor(topology, {"cmd": "kill", "node": node})
        print(f"{node} killed; its restart policy ({topology.node(node).restart}) applies")
    elif args.restart:
        node = _node(topology, args.restart)
        _supervisor(topology, {"cmd": "restart", "node": node})
        print(f"{node} restarted")
    elif args.failpoint:
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
        print(f"{node}: cleared {step or 'all failpoints'}" + (f"; still armed: {left}" if left else ""))
    else:
        armed = {n.name: _admin(topology, n.name, lambda a: a.list()) for n in topology.nodes if n.kind != "etcd"}
        if args.json:
            print(json.dumps({k: dict(v) for k, v in armed.items()}, indent=2))
        else:
            for name, points in armed.items():
                print(f"{name:<10} " + (", ".join(f"{s}={a}" for s, a in points) or "-"))
    return OK
