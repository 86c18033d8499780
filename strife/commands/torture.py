"""`strife torture`: concurrent random payments under seeded faults, then heal and verify."""
import asyncio
import json
import random
import sys

from strife.checks.torture.run import Torture
from strife.commands import FAILED, OK, bounded_option, deployment, duration_option
from strife.core.errors import BadInput


def run(args):
    seconds = duration_option(args.seconds, "--seconds")
    bounded_option(args.concurrency, "--concurrency", 1, 256)
    topology = deployment(args, must_run=True)
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    try:
        torture = Torture(topology, seconds, seed, args.concurrency,
                          progress=lambda text: print(f"torture: {text}", file=sys.stderr, flush=True))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    result = asyncio.run(torture.run())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        p = result["payments"]
        print(f"seed {seed}: {p['sent']} payments ({p['committed']} committed, {p['aborted']} aborted, "
              f"{p['unknown']} without answer) + {p['through_outbox']} through the outbox; "
              f"{sum(1 for i in result['injected'] if i['applied'])} faults injected")
        for name, figures in result["recovery"]["summary"].items():
            print(f"  {name:<20} x{figures['count']:<3} healthy again p50 {_s(figures['healthy_p50'])} "
                  f"max {_s(figures['healthy_max'])}; next commit through it p50 {_s(figures['commit_p50'])} "
                  f"max {_s(figures['commit_max'])}")
        print(f"  longest stretch without a commit: {result['recovery']['longest_commit_gap_s']:.2f}s")
        _print_resources(result["resources"])
        for problem in result["problems"]:
            print(f"VIOLATION {problem}")
        print("torture: OK, verify clean" if result["ok"] else "torture: FAILED")
    return OK if result["ok"] else FAILED


def _s(seconds):
    return "-" if seconds is None else f"{seconds:.2f}s"


def _print_resources(figures):
    """One line for the soak: flat, or which figures grew (`--json` has every sample)."""
    if not figures.get("samples"):
        return
    disk = figures["disk"]
    per_payment = ", ".join(f"{name.removesuffix('_bytes').replace('_', ' ')} {d['bytes_per_payment']} B"
                            for name, d in disk.items() if "bytes_per_payment" in d and d["bytes_per_payment"] is not None)
    verdict = "flat after warm-up" if figures["flat"] else "GROWING: " + ", ".join(figures["growing"])
    print(f"  resources over {figures['seconds']:.0f}s ({figures['samples']} samples): {verdict}"
          + (f"; kept per payment: {per_payment}" if per_payment else ""))
