"""The server's logs on stderr: JSON lines for machines, plain lines for people.

A JSON line has ``ts`` (ISO 8601 UTC), ``level``, ``logger`` and ``msg``, plus whatever
a call passed in ``extra=``; exceptions add ``error`` (type and message) and ``trace``.
A text line says the same in one line a person reads on a terminal:
``12:00:01.234 info  listening host=127.0.0.1 port=3000``.  The format is ``json``,
``text``, or ``auto`` (the default): text when stderr is a terminal, JSON otherwise, so
a journal, a container log or a pipe gets JSON without being asked.
The server never logs request bodies or keys, only methods, counts and failures.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "configure_logging", "resolve_format"]

LOG_FORMATS = ("auto", "json", "text")
"""The values of ``--log-format`` / ``RONDEVU_LOG_FORMAT``."""

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as a compact JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value if isinstance(value, int | float | str | bool) else str(value)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {error}"
            entry["trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Formats a record as one line for people: local time, level, message, then the
    extra fields as ``key=value`` (quoted when they hold spaces)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        words = [stamp, f"{record.levelname.lower():<5}", record.getMessage()]
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                text = str(value)
                words.append(f"{key}={json.dumps(text) if ' ' in text or not text else text}")
        line = " ".join(words)
        if record.exc_info and record.exc_info[1] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return line


def resolve_format(log_format: str, stream: TextIO) -> str:
    """``json`` or ``text``: ``auto`` becomes text on a terminal, JSON anywhere else."""
    log_format = log_format.lower()
    if log_format not in LOG_FORMATS:
        raise ValueError(f"{log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    if log_format != "auto":
        return log_format
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or unusual stream: machines read it
        return "json"


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    """Send the server's and uvicorn's logs to stderr, in ``log_format`` (see
    `resolve_format`).  Raises `ValueError` for an unknown format."""
    handler = logging.StreamHandler(sys.stderr)
    chosen = resolve_format(log_format, sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True
