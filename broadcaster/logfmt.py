"""How every process of the server logs: text for a terminal, or one JSON object per line for a
log shipper (journald's JSON, Loki, Elasticsearch) with ``--log-format json``.

The choice travels to the core and worker processes in ``BROADCASTER_LOG_FORMAT``, so the whole
service writes one format to the same stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

ENV = "BROADCASTER_LOG_FORMAT"
FORMATS = ("text", "json")


class JsonLines(logging.Formatter):
    """One object a line: time (UTC, ISO 8601 with milliseconds), level, process, logger, message,
    and the traceback when there is one. Non-ASCII (Vietnamese names) kept as it is."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "process": self.process, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(process: str, level: int = logging.INFO, fmt: str | None = None) -> None:
    """``process``: control, core, core-shard, ...; ``fmt``: text or json (default: the environment's,
    else text). Exported to the environment, so child processes follow."""
    fmt = fmt or os.environ.get(ENV) or "text"
    if fmt not in FORMATS:
        fmt = "text"
    os.environ[ENV] = fmt
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLines(process))
    else:
        prefix = "" if process == "control" else f"{process} "
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
