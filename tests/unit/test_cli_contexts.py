"""Several clusters in the CLI's config (cli/config.py, cli/contexts.py): kubectl's contexts.

The older single-cluster file stays readable; `cluster up` adds a context
per cluster and `cluster down` removes it; --context/MCTL_CONTEXT pick one
for a call, `config use-context` for every later one.
"""

from __future__ import annotations

import json
import os

import pytest

from mctl.cli import config
from mctl.cli import main as cli


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> str:
    for var in ("MCTL_SERVER", "MCTL_CONTEXT", "MCTL_TLS_CA", "MCTL_TLS_CERT", "MCTL_TLS_KEY",
                "MCTL_INSECURE", "MCTL_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MCTL_HOME", str(tmp_path))
    config.select(None)
    yield str(tmp_path)
    config.select(None)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def cluster(directory: str, port: int) -> dict[str, str]:
    return {"server": f"127.0.0.1:{port}", "cluster_dir": directory,
            "tls_ca": f"{directory}/ca.crt", "tls_cert": f"{directory}/admin.crt",
            "tls_key": f"{directory}/admin.key"}


def test_an_old_single_cluster_file_is_read_as_one_context(home, capsys):
    with open(os.path.join(home, "config.json"), "w") as f:
        json.dump({"server": "10.0.0.1:7070", "insecure": "true"}, f)
    assert config.server(None) == "10.0.0.1:7070"
    assert config.load_all() == ("default", {"default": {"server": "10.0.0.1:7070",
                                                         "insecure": "true"}})
    code, out, _ = run(capsys, "config", "current-context")
    assert (code, out) == (0, "default\n")


def test_cluster_up_adds_a_context_per_cluster_and_down_removes_it(home):
    assert config.save(cluster("/var/lib/a/cluster", 7070)) == "cluster"
    assert config.save(cluster("/tmp/b/cluster", 7071)) == "cluster-2"
    # The same cluster again (`up` that resumes): its own context, not a third.
    assert config.save(cluster("/var/lib/a/cluster", 7072)) == "cluster"
    current, contexts = config.load_all()
    assert current == "cluster" and sorted(contexts) == ["cluster", "cluster-2"]
    assert config.server(None) == "127.0.0.1:7072"
    config.forget_cluster("/var/lib/a/cluster")
    current, contexts = config.load_all()
    assert current == "" and list(contexts) == ["cluster-2"]
    config.forget_cluster("/tmp/b/cluster")
    assert not os.path.exists(config.config_path())


def test_context_flag_env_and_use_context_pick_the_server(home, capsys, monkeypatch):
    config.save(cluster("/x/one", 7001))
    config.save(cluster("/x/two", 7002))
    assert config.server(None) == "127.0.0.1:7002"
    config.select("one")
    assert config.server(None) == "127.0.0.1:7001"
    monkeypatch.setenv("MCTL_CONTEXT", "one")
    config.select(None)
    assert config.server(None) == "127.0.0.1:7001"
    monkeypatch.delenv("MCTL_CONTEXT")
    config.select(None)
    code, out, _ = run(capsys, "config", "use-context", "one")
    assert code == 0 and "one" in out
    config.select(None)
    assert config.server(None) == "127.0.0.1:7001"
    code, out, _ = run(capsys, "config", "get-contexts")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["CURRENT", "NAME", "SERVER", "AUTH", "CLUSTER-DIR"]
    assert lines[1].split()[:3] == ["*", "one", "127.0.0.1:7001"]
    assert lines[2].split()[:2] == ["two", "127.0.0.1:7002"]


def test_an_unknown_context_is_one_line_naming_the_known_ones(home, capsys):
    config.save(cluster("/x/one", 7001))
    code, _, err = run(capsys, "get", "nodes", "--context", "nope", "--server", "127.0.0.1:1")
    assert code == 1
    assert err.startswith("mctl: context nope not found in ") and err.endswith("(contexts: one)\n")


def test_set_context_makes_a_remote_cluster_known(home, capsys, tmp_path):
    code, out, _ = run(capsys, "config", "set-context", "prod", "--server", "10.0.0.2:7070",
                       "--tls-ca", "ca.crt", "--tls-cert", "me.crt", "--tls-key", "me.key")
    assert code == 0 and "created" in out
    _, contexts = config.load_all()
    assert contexts["prod"]["server"] == "10.0.0.2:7070"
    assert contexts["prod"]["tls_ca"] == os.path.abspath("ca.crt")
    code, out, _ = run(capsys, "config", "set-context", "prod", "--insecure")
    assert "modified" in out
    assert config.load_all()[1]["prod"] == {"server": "10.0.0.2:7070", "insecure": "true"}
    code, out, _ = run(capsys, "config", "delete-context", "prod")
    assert code == 0 and config.load_all()[1] == {}


def test_the_number_of_contexts_is_bounded(home, monkeypatch):
    monkeypatch.setattr(config, "MAX_CONTEXTS", 3)
    for i in range(3):
        config.save(cluster(f"/x/c{i}", 7000 + i))
    with pytest.raises(config.ConfigError, match="already holds 3 contexts"):
        config.save(cluster("/x/c9", 7009))


def test_a_context_name_from_an_odd_directory_is_a_dns_label(home):
    assert config.save(cluster("/x/My Cluster_dir!", 1)) == "my-cluster-dir"
    assert config.save(cluster("/x/___", 2)) == "default"


def test_an_older_cli_still_finds_the_current_cluster_at_the_top(home):
    config.save(cluster("/x/one", 7001))
    config.save(cluster("/x/two", 7002))
    with open(config.config_path()) as f:
        doc = json.load(f)
    assert doc["server"] == "127.0.0.1:7002" and doc["tls_cert"] == "/x/two/admin.crt"
    # This CLI reads the contexts, not the copy at the top.
    config.select("one")
    assert config.server(None) == "127.0.0.1:7001"
