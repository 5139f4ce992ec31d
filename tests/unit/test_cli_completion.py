"""`mctl completion bash|zsh`: the script completes verbs, sub-verbs, kinds and flags.

Run in a real bash: the script is sourced and its function called with
COMP_WORDS as bash sets them, and what it offers is compared.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from mctl.cli import completion
from mctl.cli import main as cli


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("completion") / "mctl.bash"
    path.write_text(completion.bash(cli.build_parser()))
    return str(path)


def complete(script: str, line: str, mctl: str = "return 1") -> list[str]:
    words = line.split(" ")
    # A stand-in `mctl` (by default one that answers nothing): no cluster here.
    program = (f"mctl() {{ {mctl}; }}\nsource {shlex.quote(script)}\n"
               f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
               f"COMP_CWORD={len(words) - 1}\n_mctl\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return sorted(w for w in out.split("\n") if w)


def test_verbs(script):
    assert complete(script, "mctl ge") == ["get"]
    assert {"apply", "get", "logs", "config", "completion"} <= set(complete(script, "mctl "))


def test_verbs_after_global_flags(script):
    assert complete(script, "mctl -n shop --server h:1 des") == ["describe"]


def test_kinds_for_get_delete_describe(script):
    assert complete(script, "mctl get rep") == ["replicas"]
    assert complete(script, "mctl -n x describe no") == ["nodes"]


def test_sub_verbs(script):
    assert complete(script, "mctl config use") == ["use-context"]
    assert "up" in complete(script, "mctl cluster ")


def test_flags_of_the_verb_and_the_global_ones(script):
    flags = complete(script, "mctl get replicas --")
    assert {"--selector", "--sort-by", "--show-labels", "--output", "--namespace",
            "--context", "--server"} <= set(flags)
    assert "--nodes" in complete(script, "mctl cluster up --no")


def test_output_formats(script):
    assert complete(script, "mctl get replicas -o js") == ["json", "jsonpath="]


def test_zsh_runs_the_same_function_through_bashcompinit():
    text = completion.zsh(cli.build_parser())
    assert text.startswith("#compdef mctl\n") and "bashcompinit" in text
    assert "complete -F _mctl mctl" in text


def test_the_script_is_printed_by_the_verb(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["completion", "bash"])
    assert e.value.code == 0
    assert "complete -F _mctl mctl" in capsys.readouterr().out


def test_names_are_asked_of_the_cluster_in_the_namespace_given(script):
    # The stand-in prints what `mctl get KIND -o name` would, and its arguments.
    fake = 'echo "replica/web-1"; echo "replica/web-2"; echo "replica/x-$*" | tr " " _'
    assert complete(script, "mctl logs we", fake) == ["web-1", "web-2"]
    assert complete(script, "mctl -n shop get replicas x", fake) == [
        "x-get_replicas_-n_shop_-o_name"]
    assert complete(script, "mctl cordon x", fake) == ["x-get_nodes_-o_name"]
