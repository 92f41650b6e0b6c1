"""docs/plugins.md documents every member of the plugin contract with its real signature.

The page follows a convention this test parses (the page states it too, at the top of its
"Reference" section):

- A heading whose text begins with a code span opens a documented scope: `` `harness.api` `` (the
  module's functions and names), an exported class (`` `Backend` ``), or a hook, whose heading is
  its signature (`` `bench_register_backends(register: RegisterBackend) -> None` ``) and whose items
  give the call signature of each argument typed by a protocol of hookspecs (``register``). Text
  may follow the code span. The scope ends at the next heading of any level. A heading that begins with a code
  span naming none of these is an error, so a scope is never skipped silently.
- Inside a scope, every list item at the left margin (``- `...` ``) that begins with a code span
  documents one member: the code span is its signature. Indented items and other text are prose.
- A signature is what ``inspect.signature`` prints, with annotations as written in the source
  (``Model``, not ``'Model'``: the modules use ``from __future__ import annotations``) and defaults
  as their ``repr``: ``prepare(self, model: Model, cell: Cell, workdir: Path) -> Session``.
  Methods keep ``self``; class methods keep ``cls`` and say ``@classmethod``; abstract methods say
  ``@abstractmethod``; a property is ``@property name: T``; an attribute or a dataclass field is
  ``name: T`` or ``name: T = default`` (a field made by a factory shows what the factory makes:
  ``= {}``); a module-level name that is neither class nor function is ``NAME = value``.
  Whitespace does not count, nor single against double quotes; everything else does.

A member is public when its name has no leading underscore, plus ``__init__`` where the class
defines one itself (a dataclass's generated one is covered by its fields, documented in order).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import harness.api as api
from harness import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
#: the module scope's heading
MODULE_SCOPE = "harness.api"
#: decorators a signature may begin with, in the order the test writes them
DECORATORS = ("classmethod", "staticmethod", "property", "abstractmethod")
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("bench_"))

_HEADING = re.compile(r"^#{1,6}\s+`([^`]+)`")
_ENTRY = re.compile(r"^- `([^`]+)`")
_SIGNATURE = re.compile(r"^((?:@\w+\s+)*)([A-Za-z_]\w*)\s*(.*)$", re.DOTALL)


# -- the page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One documented member: the scope it sits in, its name, its signature as written, its line."""

    scope: str
    name: str
    signature: str
    line: int


@dataclass
class Page:
    entries: list[Entry]
    #: scopes opened, each with the line of its heading
    scopes: dict[str, int]
    #: what the page gets wrong in its layout (a heading naming nothing known, an entry that is no signature)
    layout: list[str]


def _scope_of(span: str) -> str | None:
    if span == MODULE_SCOPE:
        return MODULE_SCOPE
    if span in api.__all__ and inspect.isclass(getattr(api, span)):
        return span
    match = re.match(r"(bench_\w+)\s*\(", span)
    if match and match.group(1) in HOOKS:
        return match.group(1)
    return None


def parse(text: str) -> Page:
    page = Page([], {}, [])
    scope: str | None = None
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            heading = _HEADING.match(line)
            scope = None
            if heading is None:
                continue
            scope = _scope_of(heading.group(1))
            if scope is None:
                page.layout.append(
                    f"docs/plugins.md:{number}: the heading `{heading.group(1)}` begins with a code span but names "
                    f"no scope: `{MODULE_SCOPE}`, a class of harness.api or a hook's signature"
                )
                continue
            if scope in page.scopes:
                page.layout.append(
                    f"docs/plugins.md:{number}: a second heading for `{scope}` (the first on line {page.scopes[scope]})"
                )
            page.scopes[scope] = number
            if scope in HOOKS:  # a hook's heading is its entry
                page.entries.append(Entry(scope, scope, heading.group(1), number))
            continue
        item = _ENTRY.match(line)
        if scope is None or item is None:
            continue
        match = _SIGNATURE.match(item.group(1).strip())
        if match is None:
            page.layout.append(f"docs/plugins.md:{number}: `{item.group(1)}` in `{scope}` is not a signature")
            continue
        page.entries.append(Entry(scope, match.group(2), item.group(1).strip(), number))
    return page


# -- the code --------------------------------------------------------------------------------


class _Text:
    """An annotation shown as the text it was written as."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return annotation
    if isinstance(annotation, str):  # from __future__ import annotations: the source's text
        return _Text(annotation.strip("'\""))
    return _Text(inspect.formatannotation(annotation))


def signature_text(func: Callable[..., Any], *, drop_first: bool = False) -> str:
    """``(params) -> return`` as ``inspect.signature`` prints it, annotations unquoted."""
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1 if drop_first else 0 :]
    params = [p.replace(annotation=_annotation(p.annotation)) for p in params]
    return str(sig.replace(parameters=params, return_annotation=_annotation(sig.return_annotation)))


def _value_text(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return repr(value)
    if isinstance(value, types.UnionType):
        return str(value)
    if type(value).__name__ == "HookimplMarker":
        return f"HookimplMarker({value.project_name!r})"
    raise AssertionError(f"the test cannot show a value of type {type(value).__name__}: teach _value_text")


def _attribute_text(name: str, annotation: Any, default: Any = dataclasses.MISSING) -> str:
    text = name
    if annotation is not inspect.Parameter.empty:
        text += f": {_annotation(annotation)!r}"
    if default is not dataclasses.MISSING:
        text += f" = {default!r}"
    return text


def _decorated(decorators: set[str], text: str) -> str:
    return " ".join([*(f"@{d}" for d in DECORATORS if d in decorators), text])


def class_members(cls: type) -> dict[str, str]:
    """Each public member of ``cls`` (defined in the class itself) with its signature as the page writes it."""
    members: dict[str, str] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for name, f in fields.items():
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        members[name] = _attribute_text(name, f.type, default)
    annotations = inspect.get_annotations(cls)
    for name, value in vars(cls).items():
        if name in fields or (name.startswith("_") and name != "__init__") or (name == "__init__" and fields):
            continue
        decorators = set()
        if isinstance(value, classmethod | staticmethod):
            decorators.add(type(value).__name__)
            func = value.__func__
        elif isinstance(value, property):
            returns = inspect.signature(value.fget).return_annotation if value.fget else inspect.Parameter.empty
            members[name] = _decorated({"property"}, _attribute_text(name, returns))
            continue
        elif inspect.isfunction(value):
            func = value
        else:
            members[name] = _attribute_text(name, annotations.get(name, inspect.Parameter.empty), value)
            continue
        if getattr(func, "__isabstractmethod__", False):
            decorators.add("abstractmethod")
        members[name] = _decorated(decorators, name + signature_text(func))
    for name, annotation in annotations.items():
        if name not in members and not name.startswith("_"):
            members[name] = _attribute_text(name, annotation)
    return members


def module_members() -> dict[str, str]:
    members = {}
    for name in api.__all__:
        value = getattr(api, name)
        if inspect.isclass(value):
            continue
        if inspect.isroutine(value) or hasattr(value, "__wrapped__"):
            members[name] = name + signature_text(value)
        else:
            members[name] = f"{name} = {_value_text(value)}"
    return members


def hook_members(hook: str) -> dict[str, str]:
    """The hook's signature, and that of each argument it is called with whose type is a protocol
    of hookspecs (``register``)."""
    func = getattr(hookspecs, hook)
    members = {hook: hook + signature_text(func)}
    for param in inspect.signature(func).parameters.values():
        protocol = getattr(hookspecs, str(param.annotation).strip("'\""), None)
        if inspect.isclass(protocol) and "__call__" in vars(protocol):
            members[param.name] = param.name + signature_text(vars(protocol)["__call__"], drop_first=True)
    return members


def real_members() -> dict[str, dict[str, str]]:
    """Scope -> member name -> signature text, for every scope the page must have."""
    scopes = {MODULE_SCOPE: module_members()}
    protocols = {getattr(hookspecs, name) for name in ("RegisterBackend", "RegisterModel")}
    for name in api.__all__:
        value = getattr(api, name)
        if inspect.isclass(value) and value not in protocols:  # the hooks' protocols: under their hook
            scopes[name] = class_members(value)
    for hook in HOOKS:
        scopes[hook] = hook_members(hook)
    return scopes


# -- the comparison --------------------------------------------------------------------------


def canonical(signature: str) -> str:
    """Decorators in a fixed order, no whitespace, one kind of quote."""
    match = _SIGNATURE.match(signature.strip())
    assert match is not None, signature
    decorators = set(match.group(1).replace("@", " ").split())
    unknown = decorators - set(DECORATORS)
    text = _decorated(decorators & set(DECORATORS), match.group(2) + match.group(3))
    if unknown:
        text = " ".join(f"@{d}" for d in sorted(unknown)) + " " + text
    return re.sub(r"\s+", "", text).replace('"', "'")


def _where_it_differs(documented: str, real: str) -> str:
    a, b = canonical(documented), canonical(real)
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"the page has {a[at:][:40]!r} where the code has {b[at:][:40]!r}"


@dataclass(frozen=True)
class Problems:
    undocumented: list[str]
    unknown: list[str]
    different: list[str]
    layout: list[str]


def check(text: str) -> Problems:
    page = parse(text)
    real = real_members()
    undocumented: list[str] = []
    unknown: list[str] = []
    different: list[str] = []
    layout = list(page.layout)
    seen: dict[tuple[str, str], int] = {}
    for entry in page.entries:
        members = real[entry.scope]
        label = entry.name if entry.scope in (MODULE_SCOPE, entry.name) else f"{entry.scope}.{entry.name}"
        where = f"docs/plugins.md:{entry.line}"
        key = (entry.scope, entry.name)
        if key in seen:
            layout.append(f"{where}: {label} is documented twice (first on line {seen[key]})")
            continue
        seen[key] = entry.line
        if entry.name not in members:
            what = "harness.api" if entry.scope == MODULE_SCOPE else entry.scope
            unknown.append(f"{where}: {label} is documented, but {what} has no public member {entry.name!r}")
            continue
        if canonical(entry.signature) != canonical(members[entry.name]):
            different.append(
                f"{where}: {label}: documented as `{entry.signature}`, the code has `{members[entry.name]}` "
                f"({_where_it_differs(entry.signature, members[entry.name])})"
            )
    for scope, members in real.items():
        if scope not in page.scopes:
            heading = f"`{members[scope]}`" if scope in HOOKS else f"`{scope}`"
            layout.append(f"no heading {heading} in docs/plugins.md: {scope} is not documented")
        for name, signature in members.items():
            if (scope, name) not in seen:
                label = name if scope in (MODULE_SCOPE, name) else f"{scope}.{name}"
                undocumented.append(f"{label} is not documented: under the heading of `{scope}` add - `{signature}`")
    for scope in page.scopes:
        cls = getattr(api, scope, None)
        if not (inspect.isclass(cls) and dataclasses.is_dataclass(cls)):
            continue
        order = [f.name for f in dataclasses.fields(cls)]
        documented = [e.name for e in page.entries if e.scope == scope and e.name in order]
        if documented != order and sorted(documented) == sorted(order):
            layout.append(
                f"{scope}: its fields are documented in the order {', '.join(documented)}, but the constructor "
                f"takes them as {', '.join(order)}"
            )
    return Problems(undocumented, unknown, different, layout)


@pytest.fixture(scope="module")
def problems() -> Problems:
    return check(DOC.read_text())


# -- the page as it is -------------------------------------------------------------------------


def test_the_page_follows_the_convention(problems: Problems) -> None:
    assert problems.layout == [], "\n".join(problems.layout)


def test_every_public_member_is_documented(problems: Problems) -> None:
    assert problems.undocumented == [], "docs/plugins.md misses:\n" + "\n".join(problems.undocumented)


def test_every_documented_member_exists(problems: Problems) -> None:
    assert problems.unknown == [], "\n".join(problems.unknown)


def test_every_documented_signature_is_the_real_one(problems: Problems) -> None:
    assert problems.different == [], "\n".join(problems.different)


def test_every_hook_is_documented_and_tested() -> None:
    assert HOOKS == ["bench_register_backends", "bench_register_models"]
    tests = Path(__file__).parent
    used = (tests / "test_pluginmanager.py").read_text() + (tests / "test_thirdparty_plugin.py").read_text()
    page = parse(DOC.read_text())
    for name in HOOKS:
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
        assert name in page.scopes, f"{name} has no heading in docs/plugins.md"
        assert name in used, f"{name} is exercised by neither test_pluginmanager.py nor test_thirdparty_plugin.py"


def test_every_python_example_on_the_page_parses() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert blocks
    for block in blocks:
        ast.parse(block)


# -- the check itself --------------------------------------------------------------------------


def _edit(old: str, new: str) -> str:
    text = DOC.read_text()
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_a_changed_signature_is_named_with_what_differs() -> None:
    found = check(_edit("workdir: Path) -> Session`", "workdir: str) -> Session`"))
    (message,) = found.different
    signature = "@abstractmethod prepare(self, model: Model, cell: Cell, workdir: {}) -> Session"
    assert f"Backend.prepare: documented as `{signature.format('str')}`" in message
    assert f"the code has `{signature.format('Path')}`" in message
    assert "the page has 'str)->Session' where the code has 'Path)->Session'" in message
    assert found.undocumented == found.unknown == found.layout == []


def test_a_missing_decorator_is_a_difference() -> None:
    found = check(_edit("- `@classmethod availability(cls)", "- `availability(cls)"))
    (message,) = found.different
    assert "Backend.availability" in message and "@classmethod" in message


def test_a_missing_and_an_unknown_member_are_named() -> None:
    text = DOC.read_text()
    line = next(line for line in text.splitlines() if line.startswith("- `set_inputs(self"))
    found = check(text.replace(line, "- `set_input(self, arrays: dict[str, np.ndarray]) -> None`: rebinds"))
    assert len(found.undocumented) == 1
    assert found.undocumented[0].startswith("Session.set_inputs is not documented: under the heading of `Session` add")
    (unknown,) = found.unknown
    assert "Session.set_input is documented, but Session has no public member 'set_input'" in unknown


def test_whitespace_and_quotes_do_not_count() -> None:
    found = check(_edit("`load: str = 'single_stream'`", '`load:str  =  "single_stream"`'))
    assert found == Problems([], [], [], [])


def test_an_unknown_scope_heading_and_a_field_out_of_order_are_layout_problems() -> None:
    text = DOC.read_text() + "\n### `Backendz`\n"
    seed = next(line for line in text.splitlines() if line.startswith("- `seed: int = 0`"))
    load = next(line for line in text.splitlines() if line.startswith("- `load: str"))
    text = text.replace(seed, "@@SEED@@").replace(load, seed).replace("@@SEED@@", load)
    found = check(text)
    assert any("`Backendz` begins with a code span but names no scope" in p for p in found.layout)
    assert any("Cell: its fields are documented in the order" in p for p in found.layout)


def test_headings_and_items_inside_code_blocks_are_not_read() -> None:
    text = DOC.read_text() + "\n```python\n# `Backendz`\n- `nothing(self)`\n```\n"
    assert check(text) == check(DOC.read_text())
