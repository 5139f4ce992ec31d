"""What an idle agent imports: the heavy modules it does not use stay out.

A fresh interpreter imports the agent's main as `mctl-agent` does, then
serves and makes one gRPC call over mutual TLS the way the agent does
(common/rpc.py, certificates checked in a forked child as the agent checks
them, the health service), and reports which modules have run. Each one kept out here
was measured in the idle agent's RSS (bench/footprint.py; bench/README.md):
gRPC's asyncio half with ssl and OpenSSL (common/lazyload.py), hashlib's
OpenSSL (common/sha256.py), protobuf's pure-Python classes, the image
archive code with tarfile (loaded with the first import or pull), dnslib
(with the DNS responder's first query), and the packages only a flag or a
verb needs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mctl.common import pki

PROBE = """
import json, sys
import mctl.agent.main
from mctl.common import health, lazyload, pki, rpc, tls

ca, cert, key = sys.argv[1:4]
credentials = tls.from_flags(ca, cert, key, False, isolated=True)
server = rpc.make_server(max_workers=2)
state = health.Health(server)
state.ready()
port = rpc.bind(server, "127.0.0.1:0", credentials)
server.start()
with rpc.make_channel(f"127.0.0.1:{port}", credentials, pki.node_server_name("n1")) as channel:
    answer = health.check(channel)
server.stop(grace=None)
print(json.dumps({"answer": answer,
                  "loaded": sorted(m for m in list(sys.modules) if lazyload.loaded(m))}))
"""

# Modules that must not have run in an idle agent, with what they cost or why.
KEPT_OUT = {
    "asyncio": "gRPC's asyncio half (common/lazyload.py)",
    "grpc.aio": "gRPC's asyncio half",
    "grpc_health.v1._async": "grpc_health's asyncio servicer",
    "ssl": "imported by asyncio; maps OpenSSL",
    "_ssl": "OpenSSL",
    "_hashlib": "OpenSSL's libcrypto, 3.8 MiB (common/sha256.py)",
    "hashlib": "OpenSSL's libcrypto through _hashlib",
    "hmac": "imports _hashlib (secrets, common/pki.py)",
    "google.protobuf.internal.python_message": "protobuf's pure-Python classes, 1.1 MiB",
    "google.protobuf.text_format": "with protobuf's pure-Python classes",
    "tarfile": "image archives only (agent/images/source.py, common/archivehead.py)",
    "gzip": "gzipped image archives only (agent/images/source.py)",
    "shlex": "crun on a hybrid cgroup hierarchy only (agent/runtime/oci/client.py)",
    "mctl.agent.images.archive": "image import and pull only",
    "mctl.agent.images.early": "image pull only",
    "mctl.agent.images.unpack": "image import and container users only",
    "mctl.agent.images.manifests": "image import and pull only",
    "dnslib": "the DNS responder's first query (agent/dns.py)",
    "termios": "exec with a terminal only (agent/execution.py)",
    "pkgutil": "gRPC's bundled root certificates only (common/lazyload.py)",
    "base64": "registry credentials only (common/registryauth.py)",
    "prometheus_client": "tests only: common/promtext.py writes the format",
    "socketserver": "--metrics-listen only (common/metricshttp.py)",
    "mctl.common.promtext": "--metrics-listen only",
    "cryptography": "the agent checks its certificates in a forked child (common/tls.py)",
    "zstandard": "zstd layers only",
    "yaml": "the CLI's -f only",
}


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    ca = pki.make_ca()
    leaf = pki.issue(ca, "agent", "n1")
    paths = [folder / "ca.crt", folder / "n1.crt", folder / "n1.key"]
    for path, data in zip(paths, (ca.cert_pem, leaf.cert_pem, leaf.key_pem), strict=True):
        path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, paths)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_probe_served_and_called_grpc(probe: dict[str, object]) -> None:
    # Else the check below would pass for an agent that never ran gRPC.
    assert probe["answer"] == "SERVING"
    loaded = set(probe["loaded"])  # type: ignore[call-overload]
    assert {"grpc", "grpc._cython.cygrpc", "mctl.agent.main", "mctl.agent.images.importer",
            "mctl.agent.dns"} <= loaded


@pytest.mark.parametrize("module", sorted(KEPT_OUT))
def test_not_loaded_by_an_idle_agent(probe: dict[str, object], module: str) -> None:
    assert module not in probe["loaded"], \
        f"{module} is loaded by an idle agent: {KEPT_OUT[module]}"  # type: ignore[operator]
