"""up, down, status, restart, logs, certs: bringing a deployment up and looking after it."""
import asyncio
import json
import sys

import psutil

from strife.commands import FAILED, NOT_RUNNING, OK, UserError, add_file_option, topology_path
from strife.deployment import certs, credentials, topology as topology_model
from strife.deployment.layout import Layout
from strife.launcher import control, deploy, detach, etcd, health, logs
from strife.launcher.daemon import serve
from strife.launcher.printer import Printer


def register(sub):
    p = sub.add_parser("up", help="start every node of a topology and supervise them",
                       description="Validate the topology, make certificates, then start etcd, banks, "
                                   "gateway and clients in order, each once the previous are healthy. "
                                   "Foreground by default (Ctrl-C stops all); -d returns once all are healthy.")
    p.add_argument("topology", nargs="?", help="topology file (default: ./topology.yaml)")
    add_file_option(p)
    p.add_argument("-d", "--detach", action="store_true",
                   help="run the supervisor in the background; exit 0 when all nodes are healthy, 1 if one is not")
    p.add_argument("--timeout", type=float, default=120.0, help="with -d: seconds to wait for health (default 120)")
    p.set_defaults(run=up)

    p = sub.add_parser("down", help="stop every node (reverse order, SIGTERM then SIGKILL)")
    add_file_option(p)
    p.set_defaults(run=down)

    p = sub.add_parser("status", help="show each node: kind, pid, state, health, restarts, uptime, address")
    add_file_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=status)

    p = sub.add_parser("restart", help="stop one node and start it again")
    add_file_option(p)
    p.add_argument("node")
    p.set_defaults(run=restart)

    p = sub.add_parser("logs", help="show nodes' logs (logs/<node>.log, with rotated files); -f follows",
                       description="The last lines of the nodes' logs (and of their rotated files), all "
                                   "merged in time order with each node's name in front; or one node's "
                                   "(`supervisor` for the supervisor's own log). -f keeps following, "
                                   "across rotations.")
    # -f means follow here, as in tail -f; the topology file is --file
    p.add_argument("--file", metavar="TOPOLOGY", help="the deployment's topology file (default: ./topology.yaml)")
    p.add_argument("node", nargs="?", help="one node, or supervisor (default: all, prefixed with their names)")
    p.add_argument("-n", "--lines", type=int, default=50, help="lines from the end of each log (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    p.set_defaults(run=show_logs)

    p = sub.add_parser("certs", help="create the deployment's CA and certificates (renew with --force)")
    add_file_option(p)
    p.add_argument("--force", action="store_true", help="renew every certificate, including the CA")
    p.set_defaults(run=make_certs)


def _load(args):
    try:
        return topology_model.load(topology_path(args))
    except topology_model.TopologyError as exc:
        raise UserError(_problems(exc)) from None


def _problems(exc):
    return "invalid topology:\n" + "\n".join(f"  {line}" for line in exc.problems)


def _prepare(args):
    path = topology_path(args)
    try:
        return deploy.prepare(path)
    except topology_model.TopologyError as exc:
        raise UserError(_problems(exc)) from None
    except deploy.AlreadyRunning as exc:
        raise UserError(str(exc), FAILED) from None
    except etcd.EtcdNotFound as exc:
        raise UserError(str(exc), FAILED) from None


def up(args):
    if args.topology and args.file:
        raise UserError("give the topology either as an argument or with -f, not both")
    resolved = _prepare(args)
    if args.detach:
        return _up_detached(resolved, args.timeout)
    supervisor = asyncio.run(serve(resolved, Printer(), echo_nodes=True))
    return OK if supervisor.phase == "stopped" and supervisor.failed is None else FAILED


def _up_detached(topology, timeout):
    try:
        answer = detach.start(topology, timeout, progress=print)
    except detach.StartFailed as exc:
        print(str(exc), file=sys.stderr)
        return FAILED
    print(f"all {len(answer['nodes'])} nodes healthy in {answer['elapsed']:.1f}s "
          f"(`strife status`, `strife logs -f`, `strife down`)")
    return OK


def _call(args, request, timeout=120.0):
    layout = Layout(topology_path(args).parent)
    try:
        return control.call(layout.socket, request, timeout=timeout)
    except control.NotRunning:
        raise UserError(f"Strife is not running in {layout.home} (start it with `strife up -d`)",
                        NOT_RUNNING) from None


def down(args):
    layout = Layout(topology_path(args).parent)
    try:
        answer = control.call(layout.socket, {"cmd": "down"}, timeout=300)
    except control.NotRunning:
        print(f"Strife is not running in {layout.home}; nothing to stop")
        return OK
    _wait_gone(answer.get("pid"))
    print(f"stopped {len(answer['nodes'])} nodes")
    return OK


def _wait_gone(pid, timeout=30.0):
    if not pid:
        return
    try:
        psutil.Process(pid).wait(timeout)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass


def status(args):
    layout = Layout(topology_path(args).parent)
    try:
        answer = control.call(layout.socket, {"cmd": "status"}, timeout=10)
    except control.NotRunning:
        if args.json:
            print(json.dumps({"running": False, "nodes": []}))
        else:
            print(f"Strife is not running in {layout.home}")
        return NOT_RUNNING
    answer.pop("ok", None)
    for n in answer["nodes"]:  # 'NOT_SERVING: disk full: ...' from the probe: the reason apart
        n["health"], n["health_reason"] = health.split(n["health"])
    if args.json:
        print(json.dumps({"running": True, **answer}, indent=2))
        return OK
    print(f"{'NAME':<10} {'KIND':<8} {'PID':>7}  {'STATE':<9} {'HEALTH':<12} {'RESTARTS':>8}  {'UPTIME':>8}  ADDRESS")
    for n in answer["nodes"]:
        uptime = _duration(n["uptime"]) if n["uptime"] is not None else "-"
        why = f"  ({n['health_reason']})" if n["health_reason"] else ""
        print(f"{n['name']:<10} {n['kind']:<8} {n['pid'] or '-':>7}  {n['state']:<9} {n['health']:<12} "
              f"{n['restarts']:>8}  {uptime:>8}  {n['address']}{why}")
    return OK if all(n["state"] == "RUNNING" for n in answer["nodes"]) else FAILED


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def restart(args):
    answer = _call(args, {"cmd": "restart", "node": args.node})
    if not answer["ok"]:
        raise UserError(answer["error"], FAILED)
    node = next(n for n in answer["nodes"] if n["name"] == args.node)
    print(f"{args.node} restarted: {node['state']}, pid {node['pid']}")
    return OK


SUPERVISOR_LOG = "supervisor"  # `strife logs supervisor`: the detached supervisor's own log


def show_logs(args):
    topology = _load(args)
    layout = Layout(topology.home)
    names = [n.name for n in topology.nodes] + [SUPERVISOR_LOG]
    if args.node and args.node not in names:
        raise UserError(f"no node named {args.node!r} (nodes: {', '.join(names)})")
    if args.lines < 0:
        raise UserError("--lines must be 0 or more")
    chosen = [args.node] if args.node else names
    opened = [logs.Log(name, layout.supervisor_log if name == SUPERVISOR_LOG else layout.log(name))
              for name in chosen]
    printer = Printer(width=max(len(n) for n in chosen))
    emit = (lambda name, line: print(line)) if args.node else printer.relay
    try:
        for name, line in logs.merged_tail(opened, args.lines):
            emit(name, line)
        if args.follow:
            sys.stdout.flush()

            def emit_now(name, line):  # a pipe's reader gets each line as it comes
                emit(name, line)
                sys.stdout.flush()
            logs.follow(opened, emit_now)
    except KeyboardInterrupt:
        pass
    finally:
        for log in opened:
            log.close()
    return OK


def make_certs(args):
    topology = _load(args)
    issued = certs.ensure(topology, force=args.force, registered=credentials.registered(topology))
    print(f"certificates in {topology.home / 'certs'}: " + (f"issued {', '.join(issued)}" if issued
                                                           else "all present and valid"))
    return OK
