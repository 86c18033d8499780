"""Figures from samples: rate, percentiles, a terminal histogram, and an optional PNG plot."""
import math


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def summarize(samples, seconds):
    ok = sorted(s.latency for s in samples if s.outcome == "ok")
    ms = lambda v: round(v * 1000, 3)  # noqa: E731
    return {
        "count": len(samples), "ok": len(ok),
        "aborted": sum(1 for s in samples if s.outcome == "aborted"),
        "errors": sum(1 for s in samples if s.outcome == "error"),
        "per_s": round(len(ok) / seconds, 1) if seconds else 0.0,
        "p50_ms": ms(percentile(ok, 50)), "p90_ms": ms(percentile(ok, 90)),
        "p99_ms": ms(percentile(ok, 99)), "max_ms": ms(ok[-1] if ok else 0.0),
    }


def histogram(samples, width=40, buckets=12):
    """Log-spaced latency buckets as text bars."""
    values = sorted(s.latency * 1000 for s in samples if s.outcome == "ok")
    if not values:
        return ["(no successful requests)"]
    low, high = max(values[0], 0.01), max(values[-1], values[0] * 1.01, 0.02)
    edges = [low * (high / low) ** (i / buckets) for i in range(buckets + 1)]
    counts = [0] * buckets
    for v in values:
        i = min(buckets - 1, int(buckets * math.log(max(v, low) / low) / math.log(high / low)))
        counts[i] += 1
    peak = max(counts)
    return [f"{edges[i]:9.2f} - {edges[i + 1]:9.2f} ms | {'#' * max(1 if c else 0, round(width * c / peak)):<{width}} {c}"
            for i, c in enumerate(counts)]


def windowed_percentiles(samples, windows=30, ps=(50, 99)):
    """[(window middle in s, {p: latency ms})] over the run, for the ok samples: trends, not dots."""
    ok = [s for s in samples if s.outcome == "ok"]
    if not ok:
        return []
    width = max(max(s.started for s in ok) / windows, 0.05)
    buckets = {}
    for s in ok:
        buckets.setdefault(int(s.started / width), []).append(s.latency)
    return [((i + 0.5) * width, {p: percentile(sorted(lat), p) * 1000 for p in ps})
            for i, lat in sorted(buckets.items())]


def plot(samples, path, title, reference=(), reference_title="gRPC echo (reference)"):
    """Latency over time of the payments and, beside them on the same scale, of the echo reference
    (`reference`): how far a payment is from what the machine's gRPC allows."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError as exc:
        raise RuntimeError(PLOT_NEEDS) from exc
    panels = [(samples, title)] + ([(reference, reference_title)] if reference else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels) if len(panels) > 1 else 10, 5),
                             sharey=True, squeeze=False)
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 50, not 5 x 10^1
    for ax, (points_of_panel, panel_title) in zip(axes[0], panels):
        _latency_panel(ax, points_of_panel, panel_title, plain)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PLOT_NEEDS = "--plot needs matplotlib: pip install -e '.[plot]' (or pip install matplotlib)"


def _latency_panel(ax, samples, title, plain):
    for outcome, colour in (("ok", "tab:blue"), ("aborted", "tab:orange"), ("error", "tab:red")):
        points = [s for s in samples if s.outcome == outcome]
        if points:
            ax.scatter([s.started for s in points], [s.latency * 1000 for s in points], s=3, c=colour,
                       label=f"{outcome} ({len(points)})", alpha=0.4)
    trend = windowed_percentiles(samples)
    for p, colour in ((50, "black"), (99, "tab:purple")):
        ax.plot([t for t, _ in trend], [by_p[p] for _, by_p in trend], c=colour, lw=1.5, label=f"p{p}")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_title(title)
    ax.legend()



