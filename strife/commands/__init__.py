"""The `strife` subcommands, one module per group; strife/cli.py assembles them."""
import os
import pathlib

# Exit codes shared by every command.
OK, FAILED, BAD_INPUT, NOT_RUNNING = 0, 1, 2, 3


class UserError(Exception):
    """A problem the user can fix; printed without a traceback. `code` is the exit code."""

    def __init__(self, message, code=BAD_INPUT):
        super().__init__(message)
        self.code = code


def topology_path(args):
    """-f/--file, else $STRIFE_TOPOLOGY, else ./topology.yaml."""
    given = getattr(args, "topology", None) or getattr(args, "file", None) or os.environ.get("STRIFE_TOPOLOGY")
    path = pathlib.Path(given or "topology.yaml")
    if not path.is_file():
        hint = "" if given else " (run in the directory of your topology.yaml, or pass -f FILE)"
        raise UserError(f"no topology file at {path}{hint}")
    return path.resolve()


def add_file_option(parser):
    parser.add_argument("-f", "--file", metavar="TOPOLOGY",
                        help="the deployment's topology file (default: ./topology.yaml or $STRIFE_TOPOLOGY)")


def duration_option(text, option):
    from strife.core.durations import DurationError, parse_duration
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise UserError(f"{option}: {exc}") from None


def bounded_option(value, option, low, high):
    if not low <= value <= high:
        raise UserError(f"{option} must be between {low} and {high}")
    return value


def deployment(args, must_run=False):
    """The topology as running (ports filled in) of the deployment these args name."""
    from strife.client.gateway_client import ClientSetupError, load_deployment
    from strife.deployment.layout import Layout
    from strife.launcher import control
    home = topology_path(args).parent
    if must_run and not control.is_running(Layout(home).socket):
        raise UserError(f"Strife is not running in {home} (start it with `strife up -d`)", NOT_RUNNING)
    try:
        return load_deployment(home)
    except ClientSetupError as exc:
        raise UserError(str(exc)) from None
