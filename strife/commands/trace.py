"""trace: one payment's timeline across every node it touched, or the payments worth a look."""
import json

from strife.commands import OK, FAILED, topology_path
from strife.core.errors import BadInput
from strife.deployment.layout import Layout

PLOT_INSTALL = "pip install 'strife[plot]' (or: pip install matplotlib)"


def run(args):
    from strife.observe import traces, waterfall
    layout = Layout(topology_path(args).parent)
    picked = [x for x in (args.txn_id, args.last, args.slowest) if x is not None]
    if len(picked) != 1:
        raise BadInput("give a transaction id, or --last [N], or --slowest [N]")
    if args.plot and not args.txn_id:
        raise BadInput("--plot draws one payment: give its transaction id")
    if args.plot and not waterfall.plot_available():  # before any work
        raise BadInput(f"--plot needs matplotlib, which is not installed here: {PLOT_INSTALL}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise BadInput(f"--plot: {args.plot!r} should be a .png file")
    for n, option in ((args.last, "--last"), (args.slowest, "--slowest")):
        if n is not None and not 1 <= n <= 10_000:
            raise BadInput(f"{option} takes a number from 1 to 10000")
    if args.txn_id is None:
        found = traces.latest(layout, args.last) if args.last else traces.slowest(layout, args.slowest)
        if args.json:
            print(json.dumps([s.__dict__ for s in found], indent=2))
        else:
            print(waterfall.listing(found) if found else f"no payments in {layout.logs}/*.trace.jsonl yet")
        return OK
    trace = traces.trace(layout, args.txn_id)
    if trace is None:
        print(f"strife trace: no record of {args.txn_id} in {layout.logs} (a payment's records are kept "
              f"as long as the nodes' rotated timeline files)", flush=True)
        return FAILED
    if args.json:
        print(json.dumps(trace.to_dict(), indent=2))
    else:
        print(waterfall.text(trace))
    if args.plot:
        waterfall.plot(trace, args.plot)
        if not args.json:
            print(f"picture: {args.plot}")
    return OK
