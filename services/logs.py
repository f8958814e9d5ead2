"""How the service logs: plain lines by default, or JSON lines (``EARPIECE_LOG_FORMAT=json``) for
a log pipeline, each naming the room, subject and correlation id of the request it came from.

The names are kept in a context variable, so each request (a task of its own) carries its own,
and a line written while handling it says whom it was about.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_about: ContextVar[Mapping[str, str]] = ContextVar(
    "earpiece_log_about", default=MappingProxyType({})
)


def log_about(**names: str | None) -> None:
    """Name what this task's log lines are about from now on (room, subject, correlation_id)."""
    _about.set({**_about.get(), **{key: value for key, value in names.items() if value}})


class JsonLines(logging.Formatter):
    """One JSON object a line: time, level, logger, message, what it is about, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_about.get(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


def configure(log_format: str, *, verbose: bool) -> None:
    """The process's logging: ``log_format`` is ``text`` or ``json``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
