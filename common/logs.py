"""Logging set-up shared by the scheduler and the agent.

Every line carries the component and, for an agent, its node; messages put
identifiers as key=value (`replica=default/web-x2k4p node=n1`), so one
replica's or one node's story is a grep away.
"""

from __future__ import annotations

import logging
import sys


def configure(component: str, node: str = "", level: str = "INFO", path: str | None = None) -> None:
    where = f" node={node}" if node else ""
    fmt = f"%(asctime)s.%(msecs)03d %(levelname)s {component}{where} %(name)s: %(message)s"
    handler: logging.Handler = (
        logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and etcd clients are chatty at DEBUG; their warnings still show.
    for noisy in ("grpc", "pyetcd", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
