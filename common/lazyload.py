"""Third-party modules that load on first use: gRPC without its asyncio half.

`import grpc` brings gRPC's asyncio API along whether or not a process uses
it: grpc/__init__.py ends with `from grpc import aio`, the C core (cygrpc)
runs `import asyncio` when it loads, and grpc_health's servicer module
imports its asyncio twin. asyncio in turn imports ssl, which maps and
initialises OpenSSL. mctl's daemons serve and call gRPC from threads and
never touch any of it, yet it was 3.5 MiB of the idle agent's RSS
(bench/footprint.py). Only the class bodies of grpc.aio and grpc_health's
asyncio servicer read asyncio's attributes; cygrpc keeps the module object
and uses it only when an asyncio server or channel is made.

The same holds for protobuf's pure-Python message classes (PROTOBUF_PYTHON).

`defer()` makes such modules lazy, as `importlib.util.LazyLoader` does:
their import statement gets an empty module object at once, and the
module's code runs on the first attribute access, wherever that happens. So nothing breaks if one is
used after all: it only costs its memory then. It must run before the
first `import grpc` of the process (the agent's main does it first thing),
and changes nothing for a module already imported. `from M import name`
reads an attribute, so it loads M at once, and so does a second `import M`
anywhere (the import system asks a module found in sys.modules whether it
is still being initialised): this suits modules that one importer brings
in, as here, or that a package's `from package import M` names.

The first access may come from any thread: it runs the module's code under
a lock, and other threads wait for it (LazyLoader has no lock in CPython
3.11, where a second thread could see the module half made). Modules of
one's own are better made lazy by importing them where they are used; this
is for third-party imports one cannot move.
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

# gRPC's asyncio API and what it alone imports (see above).
GRPC_ASYNCIO = ("asyncio", "grpc.aio", "grpc_health.v1._async")
# cygrpc imports pkgutil to read the root certificates it bundles, which
# only a TLS channel given no CA needs (mctl's always have their own).
GRPC_BUNDLED_ROOTS = ("pkgutil",)
# protobuf's pure-Python message classes: descriptor_pool.py and builder.py
# import them at the top but use them only when protobuf runs without its C
# extension (upb, which the wheels bring). With them come text_format,
# well_known_types (calendar, datetime), the Python encoder and decoder:
# 1.1 MiB of the agent's RSS.
PROTOBUF_PYTHON = ("google.protobuf.internal.python_message",)

# One lock for every deferred module: a module's code may import another
# deferred one, in the same thread (re-entrant) and in the order a plain
# import would.
_LOCK = threading.RLock()
# The loader of each module not run yet (its spec names the real loader
# while the code runs).
_PENDING: weakref.WeakKeyDictionary[ModuleType, _DeferringLoader] = weakref.WeakKeyDictionary()


class _Deferred(ModuleType):
    """A module whose code has not run: it runs on the first attribute access."""

    def __getattribute__(self, attr: str) -> Any:
        with _LOCK:
            # Another thread may have loaded it while this one waited.
            if type(self) is _Deferred and _PENDING[self].running != threading.get_ident():
                _PENDING[self].load(self)
            return ModuleType.__getattribute__(self, attr)

    def __delattr__(self, attr: str) -> None:
        getattr(self, attr)       # loads it (and fails as a plain module would)
        ModuleType.__delattr__(self, attr)


class _DeferringLoader:
    """Wraps the loader the path finder found; runs it on first use.

    Not a subclass of importlib.abc.Loader: the import system needs only
    create_module and exec_module, and importing importlib.abc costs 6.6 ms
    (it brings importlib.resources), a twentieth of a CLI call.
    """

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.before: dict[str, Any] = {}
        self.running = 0            # the thread running the module's code, if any

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.before = dict(module.__dict__)
        _PENDING[module] = self
        module.__class__ = _Deferred

    def load(self, module: ModuleType) -> None:
        """Runs the module's code (with _LOCK held); attributes set meanwhile are kept."""
        now = ModuleType.__getattribute__(module, "__dict__")
        # What importlib set on the empty module since (a submodule imported
        # meanwhile, say) is put back after the code ran, as a plain import
        # would leave it.
        kept = {k: v for k, v in now.items() if k not in self.before or v is not self.before[k]}
        spec = ModuleType.__getattribute__(module, "__spec__")
        self.running = threading.get_ident()
        try:
            spec.loader = self.loader
            now["__loader__"] = self.loader
            self.loader.exec_module(module)
        finally:
            self.running = 0
        now.update(kept)
        module.__class__ = ModuleType
        del _PENDING[module]


class _DeferringFinder:
    """A meta path finder: the spec the path finder gives, loaded on first use."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = cast("Loader", _DeferringLoader(spec.loader))
        return spec


def defer(names: Iterable[str] = GRPC_ASYNCIO) -> None:
    """Modules `names` (not imported yet) run on first attribute access from now on."""
    pending = {n for n in names if n not in sys.modules}
    if pending and not any(isinstance(f, _DeferringFinder) and f.names >= pending
                           for f in sys.meta_path):
        sys.meta_path.insert(0, _DeferringFinder(pending))


def loaded(name: str) -> bool:
    """Whether module `name` has run: imported and, if deferred, used since."""
    module = sys.modules.get(name)
    return module is not None and type(module) is not _Deferred
