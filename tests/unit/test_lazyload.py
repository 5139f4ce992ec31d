"""common/lazyload.py: a deferred module runs once, on first use, from whichever thread."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from mctl.common import lazyload


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path for test modules; the finders and modules they add are undone."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(folder: Path, name: str, code: str) -> None:
    (folder / f"{name}.py").write_text(code)


def test_code_runs_on_first_attribute_access_only(modules: Path) -> None:
    write(modules, "ll_runs", "RUNS = []\n")
    write(modules, "ll_target", "import ll_runs\nll_runs.RUNS.append(1)\nVALUE = 42\n")
    lazyload.defer(["ll_target"])
    import ll_runs
    import ll_target

    assert ll_runs.RUNS == []
    assert not lazyload.loaded("ll_target")
    assert ll_target.VALUE == 42
    assert ll_target.VALUE == 42
    assert ll_runs.RUNS == [1]
    assert lazyload.loaded("ll_target")
    assert type(ll_target) is type(sys)          # a plain module again


def test_from_import_loads_at_once(modules: Path) -> None:
    write(modules, "ll_eager", "VALUE = 7\n")
    lazyload.defer(["ll_eager"])
    from ll_eager import VALUE

    assert VALUE == 7
    assert lazyload.loaded("ll_eager")


def test_a_second_import_statement_loads_it(modules: Path) -> None:
    # The import system reads __spec__ of a module it finds in sys.modules
    # (is it still being initialised?): a deferred module waits only while
    # one importer has it (common/lazyload.py says so).
    write(modules, "ll_twice", "VALUE = 1\n")
    lazyload.defer(["ll_twice"])
    import ll_twice  # noqa: F401 - the first import, deferred

    assert not lazyload.loaded("ll_twice")
    import ll_twice  # noqa: F401, F811 - the second one

    assert lazyload.loaded("ll_twice")


def test_threads_touching_it_first_all_see_the_whole_module(modules: Path) -> None:
    # The module's code takes a while: threads that come meanwhile wait for it
    # instead of seeing it half made, and it runs once.
    write(modules, "ll_runs", "RUNS = []\n")
    write(modules, "ll_slow", "import time, ll_runs\nll_runs.RUNS.append(1)\n"
                              "time.sleep(0.2)\nVALUE = 42\n")
    lazyload.defer(["ll_slow"])
    import ll_runs
    import ll_slow

    start = threading.Barrier(8)
    seen: list[object] = []

    def read() -> None:
        start.wait()
        try:
            seen.append(ll_slow.VALUE)
        except AttributeError as e:
            seen.append(e)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [42] * 8
    assert ll_runs.RUNS == [1]


def test_a_module_imported_already_is_left_alone(modules: Path) -> None:
    write(modules, "ll_early", "VALUE = 1\n")
    import ll_early

    lazyload.defer(["ll_early"])
    assert not any(isinstance(f, lazyload._DeferringFinder) for f in sys.meta_path)
    assert lazyload.loaded("ll_early") and ll_early.VALUE == 1


def test_a_failing_module_fails_on_use_like_a_plain_import(modules: Path) -> None:
    write(modules, "ll_broken", "raise RuntimeError('broken on purpose')\n")
    lazyload.defer(["ll_broken"])
    import ll_broken

    with pytest.raises(RuntimeError, match="broken on purpose"):
        ll_broken.anything   # noqa: B018 - the access is the test


def test_unknown_and_not_imported_modules() -> None:
    assert not lazyload.loaded("no_such_module_here")
    assert lazyload.loaded("sys")
