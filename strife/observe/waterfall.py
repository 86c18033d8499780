"""A payment's trace as a picture: a terminal waterfall (text), or a PNG with matplotlib."""
from __future__ import annotations

from strife.core.money import format_minor
from strife.observe.traces import Summary, Trace

BAR = 36           # characters of the time axis
SHOWN = ("bank", "account", "direction", "vote", "decision", "proposed", "outcome", "reason", "result",
         "attempt", "acked", "by", "source", "error", "point", "action", "pid", "on", "detail")


def _label(step):
    name = step["step"]
    if name == "send":
        return f"send #{step.get('attempt', '?')}"
    if name in ("prepare", "phase2", "hold") and step.get("bank"):
        return f"{name} {step['bank']}"
    return name


def _details(step):
    parts = []
    for key in SHOWN:
        value = step.get(key)
        if value in (None, "", False) and key not in ("acked", "on"):
            continue
        if (key == "bank" and step["step"] in ("prepare", "phase2")) or (key == "attempt" and step["step"] == "send"):
            continue
        if key == "acked":
            if step["step"] == "phase2":
                parts.append("acked" if value else "NOT acked")
            continue
        if key == "source":  # an answer given again
            parts.append(f"again, from {'the ' if value == 'store' else ''}{value}")
            continue
        if key == "on":
            if step["step"] == "tracing":
                parts.append("on" if value else "off (an operator switched tracing off)")
            continue
        if key == "error" and value == "CancelledError":
            value = "cancelled (the other vote decided)"
        parts.append(str(value) if key in ("vote", "direction", "outcome", "result") else f"{key}={value}")
    return " ".join(parts)


def _bar(offset, ms, total):
    total = max(total, 1e-6)
    begin = min(BAR - 1, int(offset / total * BAR))
    width = max(1, round(ms / total * BAR)) if ms > 0 else 0
    width = min(width, BAR - begin)
    return " " * begin + ("█" * width if width else "▏") + " " * (BAR - begin - max(width, 1))


def text(trace: Trace) -> str:
    shown = trace.to_dict()
    total = shown["duration_ms"]
    head = f"payment {trace.txn_id}"
    if shown.get("payer"):
        amount = format_minor(shown["amount_minor"]) if shown.get("amount_minor") is not None else "?"
        head += f": {shown['payer']} -> {shown['payee']} {amount}"
    outcome = shown["outcome"] or "no definite answer recorded"
    if shown["reason"]:
        outcome += f" ({shown['reason']})"
    lines = [head, f"{outcome}, {total:.1f} ms from first to last step", ""]
    lines.append(f"{'OFFSET ms':>10} {'DUR ms':>9}  {'NODE':<9} {'STEP':<16} {'':<{BAR}}  DETAILS")
    for step in shown["steps"]:
        node_event = step.get("txn", "x") is None
        label = ("* " if node_event else "") + _label(step)
        lines.append(f"{step['offset_ms']:>10.1f} {step.get('ms', 0):>9.1f}  {step['node']:<9} {label:<16} "
                     f"{_bar(step['offset_ms'], step.get('ms', 0), total)}  {_details(step)}".rstrip())
    for gap in shown["restarts"]:
        lines.append(f"{gap['node']} restarted: silent for {gap['gap_ms']:.0f} ms before its new process started "
                     f"(a crash or a kill)")
    if shown["finished_by"]:
        lines.append("finished by: " + "; ".join(shown["finished_by"]))
    lines.append("(* an event of the node itself: a failpoint that fired, a process start)")
    return "\n".join(lines)


def listing(summaries: list[Summary]) -> str:
    import datetime
    lines = [f"{'TXN':<36}  {'STARTED':<12} {'MS':>9}  {'OUTCOME':<11} PAYMENT"]
    for s in summaries:
        when = datetime.datetime.fromtimestamp(s.started).strftime("%H:%M:%S.%f")[:12]
        pay = f"{s.payer} -> {s.payee} {format_minor(s.amount_minor)}" if s.payer and s.amount_minor else ""
        lines.append(f"{s.txn_id:<36}  {when:<12} {s.duration_ms:>9.1f}  {s.outcome or '-':<11} {pay}")
    return "\n".join(lines)


def plot(trace: Trace, path: str) -> None:
    """A PNG of the waterfall (matplotlib must be importable: see `plot_available`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = trace.to_dict()
    steps = shown["steps"]
    colours = {}
    palette = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(steps) + 1.5))
    for i, step in enumerate(steps):
        colour = colours.setdefault(step["node"], palette(len(colours) % 10))
        width = max(step.get("ms", 0), shown["duration_ms"] / 400)
        ax.barh(i, width, left=step["offset_ms"], color=colour,
                hatch="//" if step.get("txn", "x") is None else None)
        ax.text(step["offset_ms"] + width, i, " " + _details(step)[:60], va="center", fontsize=7)
    ax.set_yticks(range(len(steps)), [f"{s['node']}: {_label(s)}" for s in steps], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the payment's first step")
    ax.set_title(f"{trace.txn_id}: {shown['outcome'] or '?'} in {shown['duration_ms']:.1f} ms", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_available() -> bool:
    """Whether a plot can be drawn here, asked before any work: pyplot itself imported (with the
    file-only backend), so a matplotlib that is found but broken says so now, not after a run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        return True
    except Exception:  # any failure to import is "cannot plot here", said with the install hint
        return False
