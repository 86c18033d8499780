"""`strife chaos` on hosts: whole-host kills and pauses through each host's supervisor, and
network faults between hosts (strife/launcher/faults.py)."""
import concurrent.futures

from strife.commands import OK
from strife.core.durations import parse_duration
from strife.core.errors import BadInput


def _host(topology, name):
    if not topology.hosts:
        raise BadInput("host faults need a topology with a `hosts:` section")
    if name not in {h.name for h in topology.hosts}:
        raise BadInput(f"no host named {name!r} (hosts: {', '.join(h.name for h in topology.hosts)})")
    return name


def host_action(args, topology, supervisor):
    """--kill-host, --pause-host, --resume-host: the act on every node of the host."""
    if args.kill_host:
        host = _host(topology, args.kill_host)
        states = {n.name: n.state for n in supervisor.status().nodes}
        names = [n.name for n in topology.on_host(host) if states.get(n.name) in ("RUNNING", "PAUSED", "STARTING")]
        # all at once, as a host dies: each kill is answered only once its death is seen
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
            list(pool.map(supervisor.kill, names))
        print(f"host {host}: killed {', '.join(names) or 'nothing (no live node)'}; restart policies apply")
    elif args.pause_host:
        host = _host(topology, args.pause_host)
        seconds = parse_duration(args.duration) if args.duration else None
        states = {n.name: n.state for n in supervisor.status().nodes}
        names = [n.name for n in topology.on_host(host) if states.get(n.name) == "RUNNING"]
        for name in names:
            supervisor.pause(name, seconds)
        print(f"host {host}: paused {', '.join(names) or 'nothing (no running node)'}"
              + (f" for {args.duration}" if seconds else f" (`strife chaos --resume-host {host}`)"))
    else:
        host = _host(topology, args.resume_host)
        states = {n.name: n.state for n in supervisor.status().nodes}
        names = [n.name for n in topology.on_host(host) if states.get(n.name) == "PAUSED"]
        for name in names:
            supervisor.resume(name)
        print(f"host {host}: resumed {', '.join(names) or 'nothing (no paused node)'}")
    return OK


def network_fault(args, topology, layout):
    """--partition, --isolate, --loss, --latency, --heal: change the faults in force."""
    from strife.launcher import faults, netns
    if not topology.hosts:
        raise BadInput("network faults need a topology with a `hosts:` section")
    if args.one_way and not args.partition:
        raise BadInput("--one-way goes with --partition")
    if args.jitter and not args.latency:
        raise BadInput("--jitter goes with --latency")
    active = faults.load(layout)
    if args.heal is not None:
        host = _host(topology, args.heal) if args.heal else None
        kept = [f for f in active if host is not None and not faults.involves(f, host)]
        new = None
    elif args.partition:
        new = faults.partition(_host(topology, args.partition[0]), _host(topology, args.partition[1]),
                               args.one_way)
    elif args.isolate:
        new = faults.isolate(_host(topology, args.isolate))
    elif args.loss:
        new = faults.loss(_host(topology, args.loss[0]), faults.parse_percent(args.loss[1]))
    else:
        host = _host(topology, args.latency[0])
        delay = _milliseconds(args.latency[1], "--latency")
        jitter = _milliseconds(args.jitter, "--jitter") if args.jitter else 0.0
        new = faults.latency(host, delay, jitter)
    netns.require_root("a network fault")
    faults.require_tools()
    if new is not None:
        if new["kind"] == "latency":
            faults.check_netem(topology, new["host"])
        # a host's loss or latency replaces the one it had; the same partition is not listed twice
        same = {"loss": ("kind", "host"), "latency": ("kind", "host")}.get(new["kind"], tuple(new))
        kept = [f for f in active if any(f.get(k) != new.get(k) for k in same)] + [new]
    faults.apply(topology, layout, kept)  # pyright: ignore[reportPossiblyUnbound]
    if new is None:
        print("healed " + (f"every fault involving {args.heal}" if args.heal else "every network fault")
              + (f"; still in force: {'; '.join(faults.describe(f) for f in kept)}" if kept else ""))
    else:
        print(f"{faults.describe(new)} (`strife chaos --heal` removes it)")
    return OK


def _milliseconds(text, option):
    from strife.commands import duration_option
    seconds = duration_option(text, option)
    if not 0 < seconds <= 60:
        raise BadInput(f"{option} must be above 0 and at most 60s")
    return seconds * 1000
