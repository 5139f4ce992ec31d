"""Logging set-up shared by the scheduler and the agent.

Every line carries the component and, for an agent, its node; messages put
identifiers as key=value (`replica=default/web-x2k4p node=n1`), so one
replica's or one node's story is a grep away.

Two formats: `text` (the default, for people and grep) and `json` (one JSON
object per line, for log shippers: Loki, Elasticsearch, journald's
exporters). Both carry the same keys: time, level, component, node (an
agent's), logger, message, and every key=value of the message lifted to a
field of its own, so a query by `replica` or `workload` needs no regex.
"""

from __future__ import annotations

import json
import logging
import re
import sys

FORMATS = ("text", "json")
DATEFMT = "%Y-%m-%dT%H:%M:%S"
# key=value as messages write them: a lower-case identifier, then a value
# up to the next space (values with spaces are not lifted, only kept in msg).
_PAIR = re.compile(r"(?:^|\s)([a-z][a-z0-9_]*)=([^\s=]+)(?=\s|$|[,;:])")


def fields_of(message: str) -> dict[str, str]:
    """The key=value pairs of a message, in order (the first of a key wins)."""
    found: dict[str, str] = {}
    for key, value in _PAIR.findall(message):
        found.setdefault(key, value.rstrip(",;:"))
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages escaped)."""

    def __init__(self, component: str, node: str = "") -> None:
        super().__init__(datefmt=DATEFMT)
        self.component = component
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, str] = {
            "time": f"{self.formatTime(record, DATEFMT)}.{int(record.msecs):03d}",
            "level": record.levelname,
            "component": self.component,
        }
        if self.node:
            entry["node"] = self.node
        entry["logger"] = record.name
        entry["message"] = message
        for key, value in fields_of(message).items():
            # The record's own keys win; a scheduler's "node=n1" is lifted.
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(component: str, node: str = "", fmt: str = "text") -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(component, node)
    if fmt != "text":
        raise ValueError(f"--log-format {fmt!r}: must be one of {', '.join(FORMATS)}")
    where = f" node={node}" if node else ""
    line = f"%(asctime)s.%(msecs)03d %(levelname)s {component}{where} %(name)s: %(message)s"
    return logging.Formatter(line, datefmt=DATEFMT)


def configure(component: str, node: str = "", level: str = "INFO", path: str | None = None,
              fmt: str = "text") -> None:
    handler: logging.Handler = (
        logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(formatter(component, node, fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and etcd clients are chatty at DEBUG; their warnings still show.
    for noisy in ("grpc", "pyetcd", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
