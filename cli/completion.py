"""`mctl completion bash|zsh`: a shell completion script, made from the parser itself.

The script holds what argparse knows (verbs, sub-verbs, each one's flags,
get's kinds, -o's formats), so it cannot drift from the command line it
completes: it is printed from the parser of this very mctl. Object names
are asked of the cluster while completing (`mctl get KIND -o name`, with a
short timeout), as kubectl's completion does: `mctl logs <TAB>` offers the
replicas of the namespace given on the line.

Load it with `source <(mctl completion bash)`, or for zsh `source <(mctl
completion zsh)` (zsh's bashcompinit runs the same function).
"""

from __future__ import annotations

import argparse
import shlex

# What `get`/`delete`/`describe` take as KIND; -o's plain formats.
KINDS = ("workloads", "replicas", "nodes", "configs", "secrets", "volumes")
OUTPUTS = ("table", "wide", "json", "yaml", "name", "jsonpath=", "custom-columns=")
# The verbs whose first argument names an object of a kind, and that kind.
NAME_OF = {"logs": "replicas", "exec": "replicas", "cordon": "nodes", "uncordon": "nodes",
           "drain": "nodes"}


def _children(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(p: argparse.ArgumentParser) -> list[str]:
    return sorted({s for a in p._actions for s in a.option_strings if s.startswith("--")
                   or len(s) == 2})


def table(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Words to offer by position: "" the verbs, "VERB" its sub-verbs or flags, ..."""
    words: dict[str, list[str]] = {"": sorted(_children(parser)),
                                   "-": _flags(parser)}
    for verb, child in _children(parser).items():
        subs = _children(child)
        # A verb whose first argument is a choice (`cluster up|down|...`) has those as
        # its sub-verbs, with the verb's own flags.
        first = [a for a in child._actions if not a.option_strings and a.choices
                 and not isinstance(a, argparse._SubParsersAction)][:1]
        if subs or not first:
            words[verb] = sorted(subs)
        else:
            words[verb] = sorted(str(c) for c in first[0].choices or ())
        words[f"{verb} -"] = _flags(child)
        for sub_verb, grandchild in subs.items():
            words[f"{verb} {sub_verb} -"] = _flags(grandchild)
    return words


def bash(parser: argparse.ArgumentParser) -> str:
    words = table(parser)
    cases = "\n".join(f"        {shlex.quote(key)}) words={shlex.quote(' '.join(value))} ;;"
                      for key, value in sorted(words.items()))
    names = "\n".join(f"        {verb}) kind={kind} ;;" for verb, kind in sorted(NAME_OF.items()))
    return _BASH.replace("@CASES@", cases).replace("@NAMES@", names).replace(
        "@KINDS@", " ".join(KINDS)).replace("@OUTPUTS@", " ".join(OUTPUTS))


def zsh(parser: argparse.ArgumentParser) -> str:
    return ("#compdef mctl\n# zsh runs mctl's bash completion through bashcompinit.\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash(parser))


def cmd_completion(args: argparse.Namespace) -> int:
    from .main import build_parser

    parser = build_parser()
    print(bash(parser) if args.shell == "bash" else zsh(parser), end="")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("completion", help="a bash or zsh completion script for mctl",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  source <(mctl completion bash)\n"
                              "  mctl completion zsh > \"${fpath[1]}/_mctl\"")
    c.add_argument("shell", choices=["bash", "zsh"])
    c.set_defaults(fn=cmd_completion)


# The script; @...@ are filled from the parser.
_BASH = r'''# mctl completion for bash (mctl completion bash); made from mctl's own parser.
_mctl_words() {
    local key="$1" words=""
    case "$key" in
@CASES@
    esac
    printf '%s' "$words"
}

_mctl_names() {
    # Object names from the cluster, as -o name prints them (kind/name).
    local kind="$1" ns=("${@:2}")
    mctl get "$kind" "${ns[@]}" -o name 2>/dev/null | sed 's|^[^/]*/||'
}

_mctl() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local verb="" sub="" args=() ns=() i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        case "$w" in
            -n|--namespace|--context|--server)
                [[ $w == -n || $w == --namespace ]] && ns=(-n "${COMP_WORDS[i+1]}")
                [[ $w == --context ]] && ns+=(--context "${COMP_WORDS[i+1]}")
                ((i++)); continue ;;
            --tls-ca|--tls-cert|--tls-key|-o|--output|-l|--selector|--sort-by|-f|--filename)
                ((i++)); continue ;;
            -*) continue ;;
        esac
        if [[ -z $verb ]]; then verb="$w"
        elif [[ -z $sub && -n $(_mctl_words "$verb") ]]; then sub="$w"
        else args+=("$w")
        fi
    done
    case "$prev" in
        -o|--output) COMPREPLY=($(compgen -W "@OUTPUTS@" -- "$cur")); return ;;
        -f|--filename|--tls-ca|--tls-cert|--tls-key) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -n|--namespace|--server|-l|--selector|--sort-by) return ;;
        --context)
            COMPREPLY=($(compgen -W "$(mctl config get-contexts 2>/dev/null \
                | awk 'NR > 1 {print ($1 == "*") ? $2 : $1}')" -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        local flags; flags="$(_mctl_words "${verb:+$verb }${sub:+$sub }-")"
        # Each verb's list holds the global flags too (they are taken after it).
        [[ -z $flags && -n $verb ]] && flags="$(_mctl_words "$verb -")"
        [[ -z $verb ]] && flags="$(_mctl_words -)"
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
        return
    fi
    if [[ -z $verb ]]; then
        COMPREPLY=($(compgen -W "$(_mctl_words '')" -- "$cur")); return
    fi
    local subs; subs="$(_mctl_words "$verb")"
    if [[ -z $sub && -n $subs ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur")); return
    fi
    local kind=""
    case "$verb" in
        get|delete|describe)
            if [[ ${#args[@]} -eq 0 ]]; then
                COMPREPLY=($(compgen -W "@KINDS@" -- "$cur")); return
            fi
            kind="${args[0]}" ;;
    esac
    if [[ -z $kind && ${#args[@]} -eq 0 ]]; then
        case "$verb" in
@NAMES@
        esac
    fi
    [[ -n $kind ]] && COMPREPLY=($(compgen -W "$(_mctl_names "$kind" "${ns[@]}")" -- "$cur"))
}
complete -F _mctl mctl
'''
