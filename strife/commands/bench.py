"""`strife bench`: how fast Strife moves money, next to what gRPC on this machine allows."""
import asyncio
import contextlib
import json
import pathlib
import shutil
import sys
import tempfile

import grpc

from strife.checks.bench import report
from strife.checks.bench.run import Bench
from strife.commands import OK, bounded_option, duration_option, topology_path
from strife.core.errors import BadInput, Failed, StrifeError
from strife.deployment.layout import Layout
from strife.deployment.topology import load_deployment
from strife.launcher import deploy, detach
from strife.launcher.control import ControlClient
from strife.observe import waterfall


def _progress(text):
    print(f"\r\033[K{text}" if sys.stderr.isatty() else text, file=sys.stderr, end="" if sys.stderr.isatty() else "\n",
          flush=True)


def _discard(temporary):
    """Stop the deployment the bench started for itself (waiting for its supervisor to end) and
    remove its directory; one that is already down is just removed."""
    with contextlib.suppress(StrifeError, OSError):
        ControlClient(Layout(temporary)).down(timeout=120)
    shutil.rmtree(temporary, ignore_errors=True)


def run(args):
    seconds = duration_option(args.seconds, "--seconds")
    bounded_option(args.concurrency, "--concurrency", 1, 512)
    path = topology_path(args)
    if args.plot:  # before the run, not after it
        if not waterfall.plot_available():
            raise BadInput(f"{report.PLOT_NEEDS}; nothing was run")
        folder = pathlib.Path(args.plot).resolve().parent
        if not folder.is_dir():
            raise BadInput(f"--plot: no directory {folder} to write {pathlib.Path(args.plot).name} in; nothing was run")
    temporary = None
    if not ControlClient(Layout(path.parent)).is_running():
        temporary = pathlib.Path(tempfile.mkdtemp(prefix="strife-bench-"))
        shutil.copy(path, temporary / "topology.yaml")
        _progress(f"no deployment running in {path.parent}: starting one in {temporary}")
        try:
            detach.start_all(deploy.prepare(temporary / "topology.yaml"), progress=lambda text: None)
        except detach.StartFailed as exc:  # what did start goes, with the directory: nothing is left running
            _discard(temporary)
            raise Failed(f"could not start a deployment to measure:\n{exc}") from None
    try:
        topology = load_deployment(temporary or path.parent)
        bench = Bench(topology, seconds, args.concurrency, _progress, with_floor=args.floor)
        figures, samples = asyncio.run(bench.run())
    except ValueError as exc:
        raise Failed(str(exc)) from None
    except grpc.aio.AioRpcError as exc:  # the deployment stopped answering, or refused a bench account
        raise Failed(f"the bench stopped: the gateway answered {exc.code().name}: {exc.details() or ''} "
                     f"(`strife status`, `strife logs gateway`)") from None
    finally:
        if temporary:
            _discard(temporary)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    figures["deployment"] = "temporary" if temporary else str(path.parent)
    if args.plot:
        try:
            report.plot(samples, args.plot, f"Strife payments, {args.concurrency} callers",
                        reference=bench.echo_samples, reference_title=f"gRPC echo, {args.concurrency} callers")
        except RuntimeError as exc:
            raise Failed(str(exc)) from None
        figures["plot"] = args.plot
    if args.json:
        print(json.dumps(figures, indent=2))
        return OK
    _print(figures, samples)
    return OK


def _print(f, samples):
    def line(label, s):
        return (f"{label:<22} {s['per_s']:>9.1f}/s  p50 {s['p50_ms']:7.2f}  p90 {s['p90_ms']:7.2f}  "
                f"p99 {s['p99_ms']:7.2f}  max {s['max_ms']:8.2f} ms  ({s['ok']} ok, {s['aborted']} aborted, "
                f"{s['errors']} errors)")
    turns = f["slices"]["many_callers"]
    print(f"{f['accounts']} accounts, {f['concurrency']} callers, {f['seconds']:g}s per phase"
          + (f", taken in {turns} turns beside the echo's" if turns > 1 else ""))
    print(line(f"payments x{f['concurrency']}", f["payments"]))
    for kind, figures in f["payments_by_kind"].items():
        print(line(f"  of which {kind}", figures))
    print(line("cross-bank x1", f["payments_single"]))
    print(line("same-bank x1", f["payments_single_same_bank"]))
    print(line(f"echo x{f['concurrency']}", f["echo"]))
    print(line("echo x1", f["echo_single"]))
    print(f"ratio (payments/s x 6 / echo/s): {f['ratio']}   single-caller p50 / echo p50: "
          f"cross-bank {f['single_p50_over_echo_p50']}, same-bank {f['same_bank_single_p50_over_echo_p50']}")
    if floor := f.get("floor"):
        print(line(f"floor x{f['concurrency']}", floor["payments"]))
        print(line("floor cross-bank x1", floor["payments_single"]))
        print(line("floor same-bank x1", floor["payments_single_same_bank"]))
        print(f"floor (do-nothing stand-ins of the same shape, {floor['same_bank_share']:.0%} same-bank): ratio "
              f"{floor['ratio']}, single-caller p50 / echo p50: cross-bank {floor['single_p50_over_echo_p50']}, "
              f"same-bank {floor['same_bank_single_p50_over_echo_p50']}, CPU ms per payment "
              f"{floor['cpu_ms_per_payment']['total']:.2f}")
    if f["stages_ms"]:
        print("a lone cross-bank payment, median ms: " + ", ".join(f"{k} {v:.2f}" for k, v in f["stages_ms"].items()))
    print("peak RSS: " + ", ".join(f"{k} {v} MB" for k, v in f["rss_peak_mb"].items()))
    for what, cpu in (("payment", f["cpu_ms_per_payment"]), ("echo", f["cpu_ms_per_echo"])):
        parts = [f"{name} {ms:.2f}" for name, ms in cpu.items() if name != "total" and ms >= 0.01]
        print(f"CPU ms per {what}: {cpu['total']:.2f} ({', '.join(parts)})")
    _print_tracing(f["tracing"])
    print(f"latency of payments x{f['concurrency']}:")
    for row in report.histogram(samples):
        print("  " + row)


def _print_tracing(t):
    if t is None:
        print("tracing on/off: not measured, tracing is off in this deployment (settings.trace_sample 0)")
        return
    on, off = t["on"]["cpu_ms_per_payment"], t["off"]["cpu_ms_per_payment"]
    parts = ", ".join(f"{name} {ms:+.2f}" for name, ms in t["by_process_ms"].items()
                      if name != "total" and abs(ms) >= 0.01)
    paced = f", both paced at {t['paced_per_s']:g}/s" if t.get("paced_per_s") else ""
    print(f"tracing on/off (trace_sample {t['trace_sample']:g}{paced}): CPU ms per payment {on['total']:.2f} on "
          f"({t['on']['payments']['count']} payments), {off['total']:.2f} off ({t['off']['payments']['count']}): "
          f"{_pct(t['difference_pct'])} ({_pct(t['deployment_difference_pct'])} of the deployment's own, "
          f"{_pct(t['switched_difference_pct'])} of the tracing nodes' own; by round "
          f"{', '.join(_pct(r) for r in t['rounds_difference_pct'])}, median {_pct(t['median_difference_pct'])}); "
          f"by process, ms: {parts}")


def _pct(value):
    return "-" if value is None else f"{value:+.1f} %"
