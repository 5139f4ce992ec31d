"""How the store sorts etcd's failures (scheduler/store.py): a call that never
reached a member is tried on another; one etcd itself gave up on (it may have
been applied) is not, and is reported as a timeout."""

from __future__ import annotations

import grpc
import pyetcd.exceptions
import pytest

from mctl.scheduler import store as store_mod
from mctl.scheduler.store import Store, StoreUnavailable


class RpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What gRPC raises for a failed unary call: an error that is also a Call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    # The rest of grpc.Call's interface; never used here.
    def initial_metadata(self): return None          # noqa: E704
    def trailing_metadata(self): return None         # noqa: E704
    def is_active(self): return False                # noqa: E704
    def time_remaining(self): return None            # noqa: E704
    def cancel(self): return False                   # noqa: E704
    def add_callback(self, callback): return False   # noqa: E704


def pyetcd_error(code: grpc.StatusCode, details: str) -> Exception:
    """pyetcd's exception as it raises it: from inside the handler of the gRPC error."""
    kind = {grpc.StatusCode.UNAVAILABLE: pyetcd.exceptions.ConnectionFailedError,
            grpc.StatusCode.DEADLINE_EXCEEDED: pyetcd.exceptions.ConnectionTimeoutError}[code]
    try:
        try:
            raise RpcError(code, details)
        except grpc.RpcError:
            raise kind() from None
    except pyetcd.exceptions.Etcd3Exception as e:
        return e


REFUSED = "failed to connect to all addresses; last error: Connection refused"
ETCD_GAVE_UP = "etcdserver: request timed out, possibly due to previous leader failure"


@pytest.mark.unit
@pytest.mark.parametrize("error, unreached, timed_out", [
    (pyetcd_error(grpc.StatusCode.UNAVAILABLE, REFUSED), True, False),
    (pyetcd_error(grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)"), True, False),
    (pyetcd_error(grpc.StatusCode.UNAVAILABLE, ETCD_GAVE_UP), False, True),
    (pyetcd_error(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out"), False, True),
    (pyetcd_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), False, True),
    (RpcError(grpc.StatusCode.UNAVAILABLE, REFUSED), True, False),
    (RpcError(grpc.StatusCode.UNAVAILABLE, ETCD_GAVE_UP), False, True),
    (RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), False, True),
    (pyetcd.exceptions.NoServerAvailableError("none"), True, False),
    (RpcError(grpc.StatusCode.PERMISSION_DENIED, "no"), False, False),
])
def test_failures_are_sorted_into_unreached_and_timed_out(error, unreached, timed_out):
    assert store_mod._unreached(error) is unreached
    assert store_mod._timed_out(error) is timed_out


@pytest.fixture
def store():
    # Two members that are never dialled: the calls below are local functions.
    s = Store("127.0.0.1:1,127.0.0.1:2", timeout=2)
    yield s
    s.close()


def translated(*failures: Exception):
    """A store call that raises `failures` in turn, then returns "ok"; `.calls` counts them."""
    calls: list[int] = []

    @store_mod._translate
    def put(_store: Store) -> str:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "ok"

    put.calls = calls   # type: ignore[attr-defined]
    return put


@pytest.mark.unit
def test_a_call_etcd_gave_up_on_is_not_tried_again_and_says_timeout(store):
    put = translated(pyetcd_error(grpc.StatusCode.UNAVAILABLE, ETCD_GAVE_UP))
    with pytest.raises(StoreUnavailable, match="etcd timeout: etcdserver: request timed out"):
        put(store)
    assert len(put.calls) == 1


@pytest.mark.unit
def test_a_call_that_reached_no_member_is_tried_on_the_next(store):
    put = translated(pyetcd_error(grpc.StatusCode.UNAVAILABLE, REFUSED))
    assert put(store) == "ok" and len(put.calls) == 2


@pytest.mark.unit
def test_when_every_member_failed_lately_the_call_waits_for_one(store, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(store_mod.time, "sleep", slept.append)
    put = translated(*[pyetcd.exceptions.NoServerAvailableError("No endpoint available")] * 3)
    assert put(store) == "ok" and len(put.calls) == 4
    assert slept == [store_mod.RETRY_PAUSE_SECONDS] * 3
