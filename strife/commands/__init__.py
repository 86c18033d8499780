"""The work of the `strife` subcommands, one module per group; strife/cli.py parses their arguments
and imports a module only when its command runs. A command returns its exit code, or raises one of
the errors of strife/core/errors.py, which cli.py turns into a message and an exit code."""
import os
import pathlib

from strife.core.errors import BadInput, Exit

OK, FAILED, BAD_INPUT, NOT_RUNNING, QUEUED = Exit.OK, Exit.FAILED, Exit.BAD_INPUT, Exit.NOT_RUNNING, Exit.QUEUED


def topology_path(args):
    """-f/--file, else $STRIFE_TOPOLOGY, else ./topology.yaml."""
    given = getattr(args, "topology", None) or getattr(args, "file", None) or os.environ.get("STRIFE_TOPOLOGY")
    path = pathlib.Path(given or "topology.yaml")
    if not path.is_file():
        hint = "" if given else " (run in the directory of your topology.yaml, or pass --file FILE)"
        raise BadInput(f"no topology file at {path}{hint}")
    return path.resolve()


def duration_option(text, option):
    from strife.core.durations import DurationError, parse_duration
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise BadInput(f"{option}: {exc}") from None


def bounded_option(value, option, low, high):
    if not low <= value <= high:
        raise BadInput(f"{option} must be between {low} and {high}")
    return value


def deployment(args, must_run=False):
    """The topology as running (ports filled in) of the deployment these args name."""
    from strife.deployment.layout import Layout
    from strife.deployment.topology import load_deployment
    from strife.launcher.control import ControlClient, NotRunning
    home = topology_path(args).parent
    if must_run:
        try:
            ControlClient(Layout(home)).status(timeout=30)
        except NotRunning:  # nobody at the socket; one that is slow to answer is running
            raise NotRunning(f"Strife is not running in {home} (start it with `strife up -d`)") from None
        except (OSError, ValueError):
            pass
    return load_deployment(home)
