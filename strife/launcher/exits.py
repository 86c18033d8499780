"""What a node's exit status means, in words, where `strife status` and `up -d` show one."""
import signal

from strife.core.failpoints import CRASH_EXIT


def meaning(code):
    """'a `crash` failpoint fired' for 86, 'killed by SIGKILL' for -9; '' when it says nothing more."""
    if code is None:
        return ""
    if code == CRASH_EXIT:
        return "a `crash` failpoint fired; see failpoints in topology.yaml, `strife chaos --list`"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == 0:
        return "ended by itself"
    return "failed (its log says why)"
