"""Logging set-up and patient-safe identifiers for log lines.

Log lines never carry patient names or IDs; UIDs are shortened to a stable hash with
:func:`uid_tag`. Values from the network cannot be trusted to be either, so every
handler that :func:`configure_logging` installs formats with :class:`SafeFormatter`,
which, for every logger (the node's and the libraries': highdicom, pydicom,
pynetdicom, uvicorn):

- replaces every DICOM-UID-shaped token (digits and dots, three components or more,
  however long, even with control characters inside) by its :func:`uid_tag`, except
  the well-known UIDs under ``1.2.840.10008.`` (SOP classes, transfer syntaxes,
  application context: published in PS3.6, the same for every patient, and needed to
  read a negotiation failure), IPv4 addresses and short version numbers;
- escapes every control character (CR, LF, NUL, ESC, DEL, C1, Unicode line and
  paragraph separators, bidi overrides) as ``\\xNN``/``\\uNNNN``, so one record is one
  line whose first characters are the node's timestamp. Exception and stack text keeps
  its lines, each prefixed by :data:`CONTINUATION`, so it cannot forge a record either.

uvicorn replaces its loggers' handlers from its own ``log_config`` after this set-up;
:class:`ScrubFilter` on those loggers makes their records safe for any formatter.
Warnings and uncaught exceptions (any thread) go through logging as well. Patient
names and IDs cannot be recognised in free text: code must not log them (the e2e PHI
test plants them in every field and scans everything the node writes).

Only the standard library is imported here: the receive path imports this module.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import threading
import types

__all__ = ["CONTINUATION", "LOG_FORMAT", "SafeFormatter", "ScrubFilter", "configure_logging", "scrub",
           "uid_tag"]

#: The format of every record the node writes.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The prefix of every line of exception or stack text under a record.
CONTINUATION = "  | "
#: The root of the UIDs the DICOM standard itself defines (PS3.6 Annex A).
STANDARD_UID_ROOT = "1.2.840.10008."
#: Library loggers that are chatty at INFO (and may quote identifiers at DEBUG).
QUIET_LIBRARIES: tuple[str, ...] = ("pynetdicom", "highdicom", "pydicom")
#: uvicorn's loggers that log through its own handlers (its access log is off in the node).
UVICORN_LOGGERS: tuple[str, ...] = ("uvicorn", "uvicorn.error")

# C0, DEL and C1 controls; zero-width and bidi formatting characters; line and paragraph
# separators; the byte-order mark.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Digit groups joined by dots; control characters may sit between (or stand in for) the
# dots: a NUL or a newline inside a UID must not split it into short, unhashed pieces.
_UID_LIKE = re.compile(r"(?<![\d.])\d+(?:[.\x00-\x1f\x7f]+\d+)+")
_CLEAN_UID = re.compile(r"\d+(?:\.\d+)*")


def uid_tag(uid: str | None) -> str:
    """Return a short, stable, non-reversible tag for a DICOM UID.

    Parameters
    ----------
    uid : str or None
        A Study, Series or SOP Instance UID.

    Returns
    -------
    str
        ``"uid:"`` followed by the first 10 hex digits of its SHA-256, or ``"uid:-"``.
    """
    if not uid:
        return "uid:-"
    return "uid:" + hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:10]


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def _keeps(token: str) -> bool:
    """Whether a UID-shaped token is shown as it is (not an identifier)."""
    if not _CLEAN_UID.fullmatch(token):
        return False  # control characters inside: junk from the network, hashed
    parts = token.split(".")
    if len(parts) < 3:
        return True  # a decimal number, not a UID
    if token.startswith(STANDARD_UID_ROOT) and len(token) <= 64:
        return True
    if len(parts) == 4 and all(len(p) <= 3 and int(p) <= 255 for p in parts):
        return True  # an IPv4 address
    return len(parts) == 3 and len(token) <= 8  # a version number such as 3.11.4


def _hash_uid(m: re.Match[str]) -> str:
    token = m.group()
    return token if _keeps(token) else uid_tag(token)


def scrub(text: str) -> str:
    """Make one piece of text safe for a log line.

    Parameters
    ----------
    text : str
        Anything, including values received from the network.

    Returns
    -------
    str
        The text with every UID-shaped token replaced by its :func:`uid_tag` (see the
        module docstring for the exceptions) and every control character escaped;
        applying it twice changes nothing more.
    """
    return _UNSAFE.sub(_escape_char, _UID_LIKE.sub(_hash_uid, text))


def _message(record: logging.LogRecord) -> str:
    """The record's message with its arguments, without a trailing line break (not scrubbed).

    A message whose arguments do not fit its format becomes a sentence about itself
    (the logging module would otherwise print the raw arguments to stderr).
    """
    try:
        message = record.getMessage()
    except Exception as exc:
        message = f"unformattable log message {record.msg!r} ({type(exc).__name__})"
    return message.rstrip("\r\n")


class SafeFormatter(logging.Formatter):
    """A formatter whose output has no raw UID and no control character in a record's line.

    The message (with its arguments) and every other field of the line are passed
    through :func:`scrub`; the exception and stack text follow on lines of their own,
    each scrubbed and prefixed with :data:`CONTINUATION`.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Format one record safely (see the class docstring)."""
        record.message = _message(record)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = scrub(self.formatMessage(record))  # the message and every other field, in one pass
        blocks: list[str] = []
        if record.exc_info:
            blocks.append(self.formatException(record.exc_info))
        elif record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            line += "\n" + _continuation(block)
        return line


def _continuation(block: str) -> str:
    """Exception or stack text as scrubbed lines under a record (already-prefixed lines kept)."""
    return "\n".join(x if x.startswith(CONTINUATION) and scrub(x) == x else CONTINUATION + scrub(x)
                     for x in block.splitlines())


class ScrubFilter(logging.Filter):
    """A filter that makes a record safe for any formatter, in place.

    For loggers whose handlers this module does not format (uvicorn installs its own
    from its ``log_config``): the message is scrubbed and its arguments merged into it,
    and the exception and stack text become scrubbed :data:`CONTINUATION` lines. It
    never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; always ``True``."""
        record.msg, record.args = scrub(_message(record)), None
        if record.exc_info:
            record.exc_text = _continuation(_PLAIN.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = _continuation(record.exc_text)
        if record.stack_info:
            record.stack_info = _continuation(record.stack_info)
        return True


_PLAIN = logging.Formatter()


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("dicom_node.uncaught").critical("uncaught %s", exc_type.__name__, exc_info=(exc_type, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("dicom_node.uncaught").error(
        "uncaught %s in thread %s", args.exc_type.__name__, name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def configure_logging(level: str = "INFO", *, verbose: bool = False) -> None:
    """Configure safe, single-line logging to stderr for the whole process.

    The root handler formats with :class:`SafeFormatter`, so every logger that
    propagates (libraries included) is covered; warnings and uncaught exceptions (main
    thread and others) go through logging too, instead of raw tracebacks on stderr;
    pynetdicom, highdicom and pydicom log from WARNING up.

    Parameters
    ----------
    level : str
        A logging level name such as ``"INFO"`` or ``"DEBUG"``.
    verbose : bool
        Keep the libraries' (pynetdicom, highdicom, pydicom) records at ``level`` too
        (``mrinode --verbose``); by default they log from WARNING up.

    Raises
    ------
    ValueError
        If ``level`` is not a logging level name.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"--log-level {level!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR.")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(LOG_FORMAT))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    # pynetdicom is chatty at INFO and may print patient-level fields at DEBUG; highdicom
    # puts SOP Instance UIDs in its INFO lines (hashed anyway, but noise).
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(numeric if verbose else max(numeric, logging.WARNING))
    # uvicorn formats its own records with its own handlers (unless given log_config=None).
    for name in UVICORN_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, ScrubFilter) for f in lg.filters):
            lg.addFilter(ScrubFilter())
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
