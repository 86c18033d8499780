"""A process's log through loguru: its own file, rotated and pruned by size (settings.log_max_bytes,
log_keep), text or JSON lines (settings.log_format); a coloured copy for whoever reads its stdout
(the foreground supervisor); and whatever else reaches stdout or stderr, a record per line.

Decision, stdlib logging: modules keep `logging.getLogger(__name__)` and an InterceptHandler
(loguru's documented recipe) hands their records to loguru. Converting them would make loguru's
default handler print their INFO lines on stderr in every CLI command that imports them (the
outbox sender, etcd access), where the stdlib stays quiet unless configured. The call log, a record
per RPC on the hot path, uses loguru directly (strife/nodes/interceptors.py): no stdlib record on the way,
and its fields travel as keys for JSON.

gRPC's C core writes its own lines to file descriptor 2 behind Python's back. Descriptors 1 and 2
are therefore a pipe read by a relay thread, which logs each line as a record of its own (level
from gRPC's `E1126 ...` prefix): the file's one-line-per-record guarantee holds for those too.
"""
import contextlib
import logging
import os
import re
import stat
import sys
import threading

from loguru import logger

from strife.core import log_format

STDLIB_LEVELS = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARNING",
                 logging.ERROR: "ERROR", logging.CRITICAL: "CRITICAL"}
GRPC_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")
GRPC_LEVELS = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}
MAX_CAPTURED = 8192  # characters of one stray output line kept in its record
# loguru reports a record it could not write (a full disk) on sys.stderr between these lines
LOGURU_ERROR, LOGURU_ERROR_END = "--- Logging error in Loguru Handler", "--- End of logging error ---"


@contextlib.contextmanager
def process_log(path, name, settings):
    """Log to `path` for the duration; an exception that ends the process is logged as one
    record and the process exits 1."""
    console = terminal_copy()
    configure(path, name, settings, console)
    relay = capture_output()
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:  # noqa: BLE001 (whatever ends the process is in its log, on one line)
        logger.bind(logger=name).opt(exception=True).critical("stopped by an unexpected error")
        raise SystemExit(1) from None
    finally:
        relay.finish()
        logger.remove()
        if console:
            console.close()


def configure(path, name, settings, console=None):
    """Sinks for this process: the file (and `console`, a text stream, when given); stdlib
    logging routed into them. Every record carries `node`."""
    logger.remove()
    logger.configure(extra={"node": name})
    line = log_format.json_line if settings.log_format == "json" else log_format.text_line
    # retention counts the rotated files, so at most log_keep + 1 files of log_max_bytes exist
    logger.add(str(path), format=line, level="INFO", rotation=SizeRotation(settings.log_max_bytes),
               retention=settings.log_keep, encoding="utf-8", colorize=False)
    if console is not None:
        logger.add(console, format=log_format.console_line, level="INFO", colorize=True)
    route_stdlib()


class SizeRotation:
    """loguru's rotation by size, without its seek per record: the size is read once per file,
    then counted as records are written (characters, as loguru counts)."""

    def __init__(self, limit):
        self.limit = limit
        self._file = None
        self._size = 0

    def __call__(self, message, file):
        if file is not self._file:
            self._file = file
            self._size = file.seek(0, 2)
        if self._size and self._size + len(message) > self.limit:
            self._file = None  # loguru opens the next file and writes the record there
            return True
        self._size += len(message)
        return False


def route_stdlib():
    # A record per call is on the hot path: skip what no format shows (the logging docs'
    # "Optimization" section): caller frames, thread, process and multiprocessing names.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(level=logging.INFO, handlers=[InterceptHandler()], force=True)
    logging.getLogger("grpc").setLevel(logging.WARNING)
    logging.captureWarnings(True)


class InterceptHandler(logging.Handler):
    """Hands stdlib records to loguru, keeping the stdlib logger's name (shown in each line)."""

    def __init__(self):
        super().__init__()
        self._loggers = {}

    def emit(self, record):
        try:
            bound = self._loggers.get(record.name)
            if bound is None:
                bound = self._loggers[record.name] = logger.bind(logger=record.name)
            if record.exc_info:
                bound = bound.opt(exception=record.exc_info)
            bound.log(STDLIB_LEVELS.get(record.levelno, record.levelno), record.getMessage())
        except Exception:  # noqa: BLE001 (the stdlib's contract: a handler reports, never raises)
            self.handleError(record)


def terminal_copy():
    """A text stream to the original stdout when someone reads it as it comes (a pipe to the
    foreground supervisor, a terminal); None when it is a file (detached: the log itself)."""
    try:
        mode = os.fstat(1).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(1)):
            return None
        return os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    except OSError:
        return None


def capture_output():
    """Descriptors 1 and 2 become a pipe whose lines are logged; returns the relay (`finish()`)."""
    relay = _Relay()
    sys.stderr = _NotFrom(relay, sys.stderr)
    relay.start()
    return relay


class _Relay(threading.Thread):
    def __init__(self):
        super().__init__(name="output-to-log", daemon=True)
        self._read, write = os.pipe()
        for fd in (1, 2):
            os.dup2(write, fd)
        os.close(write)
        self._in_loguru_error = None

    def run(self):
        pending = b""
        while chunk := os.read(self._read, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_CAPTURED * 4:  # a very long line without an end: log it in parts
                lines.append(pending)
                pending = b""
            for raw in lines:
                self._line(raw.decode(errors="replace").rstrip("\r"))
        if pending:
            self._line(pending.decode(errors="replace"))
        os.close(self._read)

    def _line(self, text):
        if self._in_loguru_error is not None:  # loguru's report of a record it could not write
            if text.startswith(LOGURU_ERROR_END):
                last, self._in_loguru_error = self._in_loguru_error, None
                logger.bind(logger="loguru").error(f"a log record could not be written: {last}")
            elif text.strip():
                self._in_loguru_error = text.strip()
            return
        if text.startswith(LOGURU_ERROR):
            self._in_loguru_error = ""
            return
        if not text.strip():
            return
        if len(text) > MAX_CAPTURED:
            text = f"{text[:MAX_CAPTURED]}...[+{len(text) - MAX_CAPTURED} chars]"
        grpc_line = GRPC_LINE.match(text)
        if grpc_line:
            logger.bind(logger="grpc").log(GRPC_LEVELS[grpc_line.group(1)], text)
        else:
            logger.bind(logger="stderr").warning(text)

    def finish(self, timeout=2.0):
        """Log what is still in the pipe; from now on stdout and stderr go nowhere."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)  # the pipe's last writers: the relay reads to its end
        os.close(devnull)
        self.join(timeout)


class _NotFrom:
    """sys.stderr, except for writes from the relay thread. loguru reports a record it could not
    write (a full disk) on sys.stderr; from the relay that report would come back to the relay
    and feed itself, so it is dropped there."""

    def __init__(self, relay, stream):
        self._relay, self._stream = relay, stream

    def write(self, text):
        if threading.get_ident() == self._relay.ident:
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)
