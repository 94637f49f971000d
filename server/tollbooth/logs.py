"""Logging for every process: one JSON object per line, never a text prefix.

`setup(process, level)` is called once by each entry point (`run`, `serve-*`, `migrate`, the
sandbox alone). The standard library's logging carries every record, ours and the libraries'
(uvicorn, alembic, stripe, httpx, grpc's Python side), through one handler whose formatter
(python-json-logger) writes `time`, `level`, `logger`, `process`, `message`, the request id
of the call being served when there is one, and any `extra` fields. grpc's C core writes to
stderr itself, so its own log is silenced (GRPC_VERBOSITY=NONE unless set); what it reports
reaches us as Python exceptions.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

# The request id of the call being served (the gRPC interceptor sets it).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# Loggers of libraries that install handlers of their own: theirs are dropped, so every record
# reaches the one JSON handler.
LIBRARIES = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "stripe", "httpx", "grpc")


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id_var.get()
        if rid and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


def formatter(process: str) -> logging.Formatter:
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"process": process},
        json_ensure_ascii=False,
    )


class _Standard(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stdout or sys.stderr as they are when a record comes (never to a stream
    replaced and closed since, as a test's captured output is)."""

    def __init__(self, name: str) -> None:
        self._which = name
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return getattr(sys, self._which)  # type: ignore[no-any-return]

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup(process: str, level: str = "INFO", *, stream: str = "stderr") -> None:
    """Route every log record of this process to `stream` ("stderr", or "stdout" for the
    serving processes) as one JSON object per line."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    handler = _Standard(stream)
    handler.setFormatter(formatter(process))
    handler.addFilter(_RequestId())
    root = logging.getLogger()
    for old in list(root.handlers):  # ours or basicConfig's; a test runner's stay
        if type(old) in (_Standard, logging.StreamHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in LIBRARIES:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """An exception nobody caught is one JSON line too (its trace in `exc_info`)."""
    logging.getLogger("tollbooth").critical(
        f"uncaught {kind.__name__}", exc_info=(kind, value, tb), extra={"event": "crash"}
    )


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """A record whose message is `name` and whose fields are top-level keys of the line."""
    logger.log(level, name, extra={"event": name, **fields})
