"""`-o jsonpath=TEMPLATE`: kubectl's JSONPath templates over the objects `-o json` shows.

A template is literal text with expressions in braces, as kubectl has them:
`{.items[*].metadata.name}`, `{range .items[*]}{.metadata.name}{"\\n"}{end}`.
Each expression is a JSONPath evaluated by jsonpath-ng (a maintained
implementation with filters: `{.items[?(@.status.phase=="Running")]}`);
this module only splits the template and prints what each part finds, in
kubectl's manner: several results joined by a space, strings bare, anything
else as JSON, and a path that finds nothing prints nothing (kubectl's `get`
allows missing keys too).

jsonpath-ng is imported only here, and this module only for `-o jsonpath`,
`-o custom-columns` and `--sort-by`: its parser costs tens of milliseconds
that no other command should pay.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# A template or a column list is typed by a person: this bounds what a
# runaway script can make the CLI compile.
MAX_TEMPLATE_CHARS = 4096
MAX_RANGE_DEPTH = 8


class TemplateError(ValueError):
    """A template that is not one: the message names the part at fault."""


@dataclass
class _Text:
    text: str


@dataclass
class _Expr:
    path: str
    find: Callable[[Any, Any], list[Any]]


@dataclass
class _Range:
    path: str
    find: Callable[[Any, Any], list[Any]]
    body: list[_Text | _Expr | _Range]


def _quote_keys(text: str) -> str:
    """kubectl's `.labels.x\\.io/name` (a key with dots or slashes) as `.labels['x.io/name']`.

    jsonpath-ng reads a key with a dot or a slash only in brackets; kubectl
    users write it with escaped dots. Other paths are returned unchanged.
    """
    if "\\." not in text and "/" not in text:
        return text
    pieces: list[str] = []
    piece: list[str] = []
    depth, quote, i = 0, "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and text[i + 1:i + 2] == "." and depth == 0:
            piece.append("\\.")
            i += 2
            continue
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "." and depth == 0:
            pieces.append("".join(piece))
            piece = []
            i += 1
            continue
        piece.append(ch)
        i += 1
    pieces.append("".join(piece))
    out = pieces[0]
    for p in pieces[1:]:
        name, bracket, rest = p.partition("[")
        if "\\." in name or "/" in name:
            key = name.replace("\\.", ".").replace("'", "\\'")
            out += f"['{key}']{bracket}{rest}"
        else:
            out += "." + p
    return out


def compile_path(path: str) -> Callable[[Any, Any], list[Any]]:
    """`path` (`.a.b`, `{.a.b}`, `$.a`, `@.a`) as a function of (root, current) to its values."""
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext.parser import parse

    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    from_root = text.startswith("$")
    if text.startswith("@"):
        text = text[1:]
    if not from_root:
        if text and not text.startswith((".", "[")):
            text = "." + text      # kubectl accepts `metadata.name` for `.metadata.name`
        text = "$" + text
    try:
        compiled = parse(_quote_keys(text))
    except (JsonPathLexerError, JsonPathParserError, ValueError, AttributeError) as e:
        raise TemplateError(f"{path!r} is not a JSONPath: {str(e).splitlines()[0]}") from None

    def find(root: Any, current: Any) -> list[Any]:
        return [m.value for m in compiled.find(root if from_root else current)]
    return find


def _pieces(template: str) -> Iterator[tuple[bool, str]]:
    """(is_expression, text) in order; braces inside quoted strings do not count."""
    i, n = 0, len(template)
    while i < n:
        start = template.find("{", i)
        if start < 0:
            yield False, template[i:]
            return
        if start > i:
            yield False, template[i:start]
        j, quote = start + 1, ""
        while j < n:
            ch = template[j]
            if quote:
                if ch == "\\":
                    j += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch == "}":
                break
            j += 1
        if j >= n:
            raise TemplateError(f"unclosed {{ at character {start + 1}")
        yield True, template[start + 1:j]
        i = j + 1


def _literal(text: str) -> str | None:
    """A quoted string expression (`"\\n"`, `'\\t'`) as its text, or None if it is not one."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        try:
            value = json.loads('"' + text[1:-1].replace('"', '\\"') + '"')
        except ValueError:
            raise TemplateError(f"bad escape in {text}") from None
        return str(value)
    return None


def parse_template(template: str) -> list[_Text | _Expr | _Range]:
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"longer than {MAX_TEMPLATE_CHARS} characters")
    root: list[_Text | _Expr | _Range] = []
    stack = [root]
    for is_expr, text in _pieces(template):
        body = stack[-1]
        if not is_expr:
            body.append(_Text(text))
            continue
        expr = text.strip()
        if (literal := _literal(expr)) is not None:
            body.append(_Text(literal))
        elif expr == "end":
            if len(stack) == 1:
                raise TemplateError("{end} without {range ...}")
            stack.pop()
        elif expr.startswith("range ") or expr.startswith("range\t"):
            if len(stack) > MAX_RANGE_DEPTH:
                raise TemplateError(f"more than {MAX_RANGE_DEPTH} nested ranges")
            path = expr[len("range"):].strip()
            block = _Range(path, compile_path(path), [])
            body.append(block)
            stack.append(block.body)
        elif not expr:
            raise TemplateError("an empty {}")
        else:
            body.append(_Expr(expr, compile_path(expr)))
    if len(stack) > 1:
        raise TemplateError("{range ...} without {end}")
    return root


def show(value: Any) -> str:
    """A found value as kubectl prints it: strings bare, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _run(body: list[_Text | _Expr | _Range], root: Any, current: Any, out: list[str]) -> None:
    for part in body:
        if isinstance(part, _Text):
            out.append(part.text)
        elif isinstance(part, _Expr):
            out.append(" ".join(show(v) for v in part.find(root, current)))
        else:
            found = part.find(root, current)
            # `range .items[*]` finds each item; `range .items` finds the list itself.
            items = found[0] if len(found) == 1 and isinstance(found[0], list) else found
            for item in items:
                _run(part.body, root, item, out)


def render(template: str, doc: Any) -> str:
    """`template` filled from `doc`; TemplateError if the template is not one."""
    out: list[str] = []
    _run(parse_template(template), doc, doc, out)
    return "".join(out)
