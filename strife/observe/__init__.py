"""Seeing what a deployment does: Prometheus metrics on every node (metrics.py), each payment's
timeline written by every node it touched (timeline.py) and merged by `strife trace` (traces.py,
waterfall.py). The live view `strife top` stands on the launcher's control socket, so it lives above
it, in strife/commands/top/."""
