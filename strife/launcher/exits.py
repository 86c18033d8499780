"""What a node's exit status means, in words, where `strife status` and `up -d` show one."""
import signal

from strife.core.failpoints import CRASH_EXIT


def meaning(code):
    """'a `crash` failpoint fired' for 86, 'killed by SIGKILL' for -9; '' when it says nothing more."""
    if code is None:
        return ""
    if code == CRASH_EXIT:
        return "a `crash` failpoint fired; see the node's failpoints in the topology file and `strife chaos --list`"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == 0:
        return "ended by itself"
    return "failed (its log says why)"


def after_stop(code):
    """How a node the supervisor stopped ended, said without alarm when it ended as asked: etcd
    re-raises the SIGTERM it was sent (-15), a Python node returns 0."""
    if code in (0, -signal.SIGTERM):
        return ""
    if code == -signal.SIGKILL:
        return " (SIGKILL: it did not end within stop_grace)"
    return f" (exit {code}{': ' + meaning(code) if meaning(code) else ''})"
