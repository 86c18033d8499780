"""up, down, status, restart, logs, certs: bringing a deployment up and looking after it."""
import json
import sys

from strife.commands import FAILED, NOT_RUNNING, OK, topology_path
from strife.core.errors import BadInput
from strife.deployment.layout import Layout
from strife.launcher.control import ControlClient, NotRunning


def _load(args):
    from strife.deployment import topology as topology_model
    try:
        return topology_model.load(topology_path(args))
    except topology_model.TopologyError as exc:
        raise BadInput(_problems(exc)) from None


def _problems(exc):
    return "invalid topology:\n" + "\n".join(f"  {line}" for line in exc.problems)


def _prepare(args):
    from strife.deployment import topology as topology_model
    from strife.launcher import deploy
    try:
        return deploy.prepare(topology_path(args), host=args.host)
    except topology_model.TopologyError as exc:
        raise BadInput(_problems(exc)) from None


def up(args):
    if args.topology and args.file:
        raise BadInput("give the topology either as an argument or with -f, not both")
    resolved = _prepare(args)
    _warn_of_etcd(resolved)
    if resolved.hosts:
        return _up_hosts(resolved, args)
    if args.detach:
        return _up_detached(resolved, args.timeout)
    import asyncio

    from strife.launcher.daemon import serve
    from strife.launcher.printer import Printer
    supervisor = asyncio.run(serve(resolved, Printer(), echo_nodes=True))
    return OK if supervisor.phase == "stopped" and supervisor.failed is None else FAILED


def _warn_of_etcd(topology):
    """A line before anything starts when the etcd to be run has known bugs that lose data."""
    if topology.of_kind("etcd"):  # (an etcd given by its endpoints is its owner's to choose)
        from strife.launcher import etcd
        known = etcd.defects(etcd.find_binary(topology))
        if known:
            print(f"strife: warning: {known}", file=sys.stderr)


def _up_detached(topology, timeout):
    from strife.launcher import detach
    try:
        status, elapsed = detach.start(topology, timeout, progress=print)
    except detach.StartFailed as exc:
        print(str(exc), file=sys.stderr)
        return FAILED
    print(f"all {len(status.nodes)} nodes healthy in {elapsed:.1f}s "
          f"(`strife status`, `strife logs -f`, `strife down`)")
    return OK


def _up_hosts(topology, args):
    """One supervisor per host: every host here, each in its network namespace (root), or with
    --host only that one (a real machine). In the foreground: their logs until Ctrl-C, then down."""
    from strife.launcher import detach
    hosts = [args.host] if args.host else [h.name for h in topology.hosts]
    try:
        status, elapsed = detach.start_all(topology, args.timeout, progress=print, host=args.host)
    except detach.StartFailed as exc:
        print(str(exc), file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        if args.detach:
            raise
        print("stopping every host")  # Ctrl-C while starting in the foreground: stop what started
        ControlClient(topology.layout).down()
        return 130
    mine = [n for n in status.nodes if n.host in hosts]
    print(f"all {len(mine)} nodes healthy in {elapsed:.1f}s on {len(hosts)} host(s) "
          f"(`strife status`, `strife logs -f`, `strife down`)")
    if args.detach:
        return OK
    layout = topology.layout
    opened = []
    try:  # from here on, Ctrl-C (even during the imports) means: stop everything
        from strife.launcher import logs
        from strife.launcher.printer import Printer
        names = [n.name for n in mine]
        opened = [logs.Log(name, layout.log(name)) for name in names]
        logs.follow(opened, Printer(width=max(len(n) for n in names)).relay)
    except KeyboardInterrupt:
        pass
    finally:
        for log in opened:
            log.close()
    print("stopping every host")
    ControlClient(layout).down()
    return OK


def _supervisor(args):
    return ControlClient(Layout(topology_path(args).parent))


def down(args):
    supervisor = _supervisor(args)
    try:
        status = supervisor.down()
    except NotRunning:
        if supervisor.placement:  # supervisors gone (a crash): their namespaces may be left
            from strife.launcher import host_control
            host_control.remove_network(supervisor.layout)
        print(f"Strife is not running in {supervisor.layout.home}; nothing to stop")
        return OK
    print(f"stopped {len(status.nodes)} nodes")
    return OK


def status(args):
    supervisor = _supervisor(args)
    try:
        status = supervisor.status()
    except NotRunning:
        if args.json:
            print(json.dumps({"running": False, "nodes": []}))
        else:
            print(f"Strife is not running in {supervisor.layout.home}")
        return NOT_RUNNING
    shown = status.shown()  # 'NOT_SERVING: disk full: ...': the reason apart
    # the same exit code with or without --json: 0 when every node runs, 1 when one does not
    code = OK if all(n.state == "RUNNING" for n in status.nodes) else FAILED
    if args.json:
        if supervisor.placement:
            from strife.launcher import faults
            shown["faults"] = [dict(f, text=faults.describe(f)) for f in faults.load(supervisor.layout)]
        print(json.dumps(shown, indent=2))
        return code
    hosts = any(n.host for n in status.nodes)
    host_column = f"{'HOST':<8} " if hosts else ""
    print(f"{'NAME':<10} {'KIND':<8} {host_column}{'PID':>7}  {'STATE':<9} {'HEALTH':<12} {'RESTARTS':>8}  "
          f"{'UPTIME':>8}  {'ADDRESS':<21} METRICS")
    for n in shown["nodes"]:
        uptime = _duration(n["uptime"]) if n["uptime"] is not None else "-"
        why = f"  ({n['health_reason']})" if n["health_reason"] else ""
        if n["state"] in ("EXITED", "FATAL") and n["last_exit"] is not None:
            why += f"  (last exit {n['last_exit']}{_exit_meaning(n['last_exit'])})"
        host = f"{n['host'] or '-':<8} " if hosts else ""
        print(f"{n['name']:<10} {n['kind']:<8} {host}{n['pid'] or '-':>7}  {n['state']:<9} {n['health']:<12} "
              f"{n['restarts']:>8}  {uptime:>8}  {n['address']:<21} {n.get('metrics') or '-'}{why}")
    if supervisor.placement:
        _print_faults(supervisor.layout)
    return code


def _exit_meaning(code):
    from strife.launcher.exits import meaning
    why = meaning(code)
    return f": {why}" if why else ""


def _print_faults(layout):
    from strife.launcher import faults
    active = faults.load(layout)
    if active:
        print("network faults in force: " + "; ".join(faults.describe(f) for f in active))


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def restart(args):
    node = _supervisor(args).restart(args.node).node(args.node)
    print(f"{args.node} restarted: {node.state}, pid {node.pid}")
    return OK


SUPERVISOR_LOG = "supervisor"  # `strife logs supervisor`: the detached supervisor's own log


def show_logs(args):
    from strife.launcher import logs
    from strife.launcher.printer import Printer
    topology = _load(args)
    layout = topology.layout
    hosts = {f"{SUPERVISOR_LOG}-{h.name}": layout.host_supervisor_log(h.name) for h in topology.hosts}
    names = [n.name for n in topology.nodes] + [SUPERVISOR_LOG, *hosts]
    if args.node and args.node not in names:
        raise BadInput(f"no node named {args.node!r} (nodes: {', '.join(names)})")
    if args.lines < 0:
        raise BadInput("--lines must be 0 or more")
    if not layout.logs.is_dir() and not args.follow:  # -f waits for them instead: `logs -f` then `up`
        raise NotRunning(f"no logs in {layout.logs}: Strife has never run here (`strife up -d` starts it)")
    chosen = [args.node] if args.node else names
    opened = [logs.Log(name, layout.supervisor_log if name == SUPERVISOR_LOG else hosts.get(name) or layout.log(name))
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

