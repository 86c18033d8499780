"""Seeing what a deployment does: Prometheus metrics on every node (metrics.py), each payment's
timeline written by every node it touched (timeline.py) and merged by `strife trace` (traces.py,
waterfall.py), and the live view `strife top` (top.py)."""
