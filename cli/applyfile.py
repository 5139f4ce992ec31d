"""What `-f FILE` holds, as one ApplyRequest: read for apply, diff and delete.

`load` reads every Workload, Config and Secret of the file (after -n);
`checked` also makes the checks the server would make of the request as a
whole (too many, too big, or, after -n, one object twice), so that apply
and diff fail the same way before anything is sent.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .client import CliError

if TYPE_CHECKING:
    from mctl.v1 import control_pb2


def load(args: argparse.Namespace) -> control_pb2.ApplyRequest:
    """Every Workload, Config and Secret of -f, as one request (after -n)."""
    from mctl.common.spec import SpecError, load_objects
    from mctl.v1 import control_pb2, types_pb2

    try:
        loaded = load_objects(args.filename)
    except SpecError as e:
        raise CliError(str(e)) from None
    request = control_pb2.ApplyRequest()
    for _, obj in loaded:
        if args.namespace_set:
            obj.metadata.namespace = args.namespace
        if isinstance(obj, types_pb2.Config):
            request.configs.append(obj)
        elif isinstance(obj, types_pb2.Secret):
            request.secrets.append(obj)
        else:
            request.workloads.append(obj)
    return request


def checked(args: argparse.Namespace) -> control_pb2.ApplyRequest:
    """`load`, and what the server would refuse of the request as a whole, refused here."""
    from mctl.common import validation

    request = load(args)
    problem = validation.apply_problem(request.workloads, validation.CLIENT_LIMITS)
    if problem is None:
        problem = validation.objects_problem(request.configs, request.secrets,
                                             sum(w.ByteSize() for w in request.workloads))
    if problem is not None:
        raise CliError(f"{args.filename}: {problem}")
    return request
