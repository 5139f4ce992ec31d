"""The command line's shape: global flags anywhere, and only the verb's module imported.

kubectl takes `-n`, `--server`, `--context` and the TLS flags before or
after the verb; so does mctl. A call builds a parser with the verbs of
main.py and of its own verb's module only (start time is paid per call);
the placeholders `mctl --help` lists must say what the verb modules say.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from mctl.cli import main as cli


def parse(*argv: str) -> argparse.Namespace:
    return cli.parser_for(list(argv)).parse_args(list(argv))


@pytest.mark.parametrize("argv", [
    ["-n", "shop", "get", "replicas"],
    ["get", "replicas", "-n", "shop"],
    ["get", "-n", "shop", "replicas"],
    ["--namespace=shop", "get", "replicas"],
    ["get", "replicas", "--namespace", "shop"],
])
def test_namespace_before_or_after_the_verb(argv):
    args = parse(*argv)
    assert (args.command, args.kind, args.namespace) == ("get", "replicas", "shop")


def test_connection_flags_after_the_verb_and_in_sub_verbs():
    args = parse("get", "nodes", "--server", "h:1", "--tls-ca", "ca", "--tls-cert", "c",
                 "--tls-key", "k", "--context", "prod")
    assert (args.server, args.tls_ca, args.tls_cert, args.tls_key, args.context) == (
        "h:1", "ca", "c", "k", "prod")
    args = parse("--server", "a:1", "image", "ls", "--insecure")
    assert args.server == "a:1" and args.insecure is True
    # Given before the verb and not after: kept (no default from the verb's parser).
    args = parse("--server", "a:1", "-n", "x", "config", "get-contexts")
    assert (args.server, args.namespace) == ("a:1", "x")


def test_a_verbs_own_flag_of_the_same_spelling_wins_there():
    args = parse("cluster", "up", "--insecure")
    assert args.cluster_insecure is True and args.insecure is False


def test_a_usage_error_after_the_verb_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["get", "replicas", "-n"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "-n/--namespace: expected one argument" in err


def _verbs(parser: argparse.ArgumentParser) -> list[tuple[str, str | None]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [(a.dest, a.help) for a in action._choices_actions]
    return []


def test_the_verb_table_says_what_the_modules_say():
    # `mctl --help` lists placeholders from main._VERBS: the same verbs and lines.
    assert _verbs(cli.parser_for(["--help"])) == _verbs(cli.build_parser())
    assert cli.parser_for(["--help"]).format_help() == cli.build_parser().format_help()


@pytest.mark.parametrize(("verb", "module"), sorted(
    {v: m for v, (m, _) in cli._VERBS.items()}.items()))
def test_each_verb_builds_with_its_module_alone(verb, module):
    parser = cli.parser_for([verb, "--help"])
    assert verb in dict(_verbs(parser))


def _imported(*argv: str) -> set[str]:
    code = ("import sys\nfrom mctl.cli import main\n"
            f"try:\n    main.parser_for({list(argv)!r}).parse_args({list(argv)!r})\n"
            "except SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_help_imports_no_grpc_protobuf_yaml_or_cryptography():
    loaded = _imported("--help")
    heavy = {"grpc", "yaml", "cryptography", "google.protobuf", "mctl.v1.control_pb2"}
    assert not loaded & heavy, loaded & heavy


def test_get_does_not_import_yaml_cryptography_or_other_verbs():
    loaded = _imported("get", "replicas", "--help")
    assert not loaded & {"yaml", "cryptography", "jsonpath_ng", "mctl.cli.cluster",
                         "mctl.cli.image", "mctl.cli.logs"}, loaded


def test_config_and_completion_import_no_grpc_or_protobuf():
    for argv in (["config", "get-contexts", "--help"], ["completion", "--help"]):
        loaded = _imported(*argv)
        assert not loaded & {"grpc", "google.protobuf", "yaml", "cryptography"}, argv
