"""UsersLock: containers are made side by side; image removal excludes them and is not starved."""

from __future__ import annotations

import threading

from mctl.agent.images.userslock import UsersLock

WAIT = 5.0


def test_makers_share_it():
    lock = UsersLock()
    both_in = threading.Barrier(2, timeout=WAIT)

    def maker() -> None:
        with lock.shared():
            both_in.wait()            # would time out if the second had to wait

    threads = [threading.Thread(target=maker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not both_in.broken


def test_a_remover_waits_for_makers_and_new_makers_wait_for_it():
    lock = UsersLock()
    order: list[str] = []
    maker_in, let_maker_go = threading.Event(), threading.Event()

    def first_maker() -> None:
        with lock.shared():
            maker_in.set()
            let_maker_go.wait(WAIT)
            order.append("first maker done")

    def remover() -> None:
        with lock:
            order.append("removed")

    def late_maker() -> None:
        with lock.shared():
            order.append("late maker")

    a = threading.Thread(target=first_maker)
    a.start()
    assert maker_in.wait(WAIT)
    b = threading.Thread(target=remover)
    b.start()
    while lock._exclusive_waiting == 0:      # the remover is queued
        b.join(0.01)
    c = threading.Thread(target=late_maker)
    c.start()
    c.join(0.2)
    assert order == []                       # neither the remover nor the late maker went
    let_maker_go.set()
    for t in (a, b, c):
        t.join(WAIT)
    assert order == ["first maker done", "removed", "late maker"]


def test_the_remover_may_reenter_and_make_while_it_holds_it():
    lock = UsersLock()
    with lock:
        with lock:
            with lock.shared():
                pass
    with lock.shared():             # released: others get it
        pass
