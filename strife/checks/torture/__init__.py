"""`strife torture`: a Jepsen-style bank workload under a seeded schedule of faults, then an audit."""
