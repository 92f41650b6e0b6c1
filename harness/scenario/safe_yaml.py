"""Safe YAML: a SafeLoader that counts while composing (aliases, nodes, depth), rejects duplicate
keys, and builds plain values from the node tree while remembering each key's line."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from harness.errors import ScenarioError
from harness.scenario.messages import Loc, _format, _Problem

#: the most bytes a scenario file may have; one more is read to detect a bigger file
MAX_SCENARIO_BYTES = 1_000_000
#: the most aliases (``*name``) a document may use
MAX_ALIASES = 100
#: the most nodes a document may have once its aliases are expanded
MAX_NODES = 100_000
#: the deepest nesting of lists and mappings, aliases expanded
MAX_DEPTH = 64


_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = _TAG + "seq", _TAG + "map", _TAG + "merge"
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL})
_ALLOWED_HINT = "a scenario holds only plain strings, numbers, booleans, null, lists and mappings; remove the tag"


def _show_tag(tag: str | None) -> str:
    if tag and tag.startswith(_TAG):
        return "!!" + tag[len(_TAG) :]
    return str(tag)


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that bounds aliases, nodes and nesting while it composes the node graph.

    Implicit typing: dates and ``=`` stay strings (no timestamp/value resolvers), and ``1e3``
    style floats are floats (YAML 1.2), on top of SafeLoader's YAML 1.1 rules.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.bench_aliases = 0
        self.bench_nodes = 0
        self.bench_depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it untyped
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, AliasEvent):
            self.bench_aliases += 1
            if self.bench_aliases > MAX_ALIASES:
                msg = (
                    f"more than {MAX_ALIASES} aliases (*name) in one document; "
                    "a scenario needs few: write the values out (this looks like an alias bomb)"
                )
                raise _Problem(line, msg)
            return super().compose_node(parent, index)
        self.bench_nodes += 1
        if self.bench_nodes > MAX_NODES:
            raise _Problem(line, f"more than {MAX_NODES:,} values in one document; a scenario is far smaller")
        self.bench_depth += 1
        try:
            if self.bench_depth > MAX_DEPTH:
                raise _Problem(line, f"lists and mappings nested more than {MAX_DEPTH} levels deep; flatten the file")
            return super().compose_node(parent, index)
        finally:
            self.bench_depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_TAG + "timestamp", _TAG + "value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _compose(text: str, source: str) -> Node | None:
    """The node graph of the single YAML document in ``text`` (None for an empty document)."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        return loader.get_single_node()
    except _Problem as problem:
        raise ScenarioError(_format(source, problem.line, (), problem.message)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        hint = "fix the YAML syntax (indentation, quoting, a missing ':' or bracket) on this line or the one before"
        if isinstance(exc, yaml.composer.ComposerError):
            if "document" in what:
                hint = "keep one document per file (remove the second '---' and what follows)"
            else:
                hint = "define each anchor (&name) once, before its aliases (*name)"
        raise ScenarioError(_format(source, line, (), f"invalid YAML: {what}; {hint}")) from None
    except yaml.reader.ReaderError as exc:
        position = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        msg = f"character #x{char:04x} is not allowed in YAML; remove it"
        raise ScenarioError(_format(source, line, (), msg)) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(_format(source, None, (), f"invalid YAML: {exc}")) from None
    except RecursionError:
        msg = f"lists and mappings nested too deep (at most {MAX_DEPTH} levels); flatten the file"
        raise ScenarioError(_format(source, None, (), msg)) from None
    finally:
        if loader is not None:
            loader.dispose()


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _check_graph(root: Node) -> list[tuple[int | None, Loc, str]]:
    """Check tags everywhere and bound the expanded size and depth of the graph.

    Aliases make the composed graph a DAG (or a cyclic graph): sizes and heights are memoised
    per node, so counting is linear in the graph, not in its exponential expansion.
    """
    problems: list[tuple[int | None, Loc, str]] = []
    sizes: dict[Node, int] = {}
    heights: dict[Node, int] = {}
    active: set[Node] = set()

    def too_big(node: Node) -> _Problem:
        msg = (
            f"the document expands to more than {MAX_NODES:,} values through its aliases (*name); "
            "write the values out (this looks like an alias bomb)"
        )
        return _Problem(_line(node), msg)

    def too_deep(node: Node) -> _Problem:
        msg = f"lists and mappings nested more than {MAX_DEPTH} levels deep (aliases expanded); flatten the file"
        return _Problem(_line(node), msg)

    def check_tag(node: Node, allowed: Iterable[str]) -> None:
        if node.tag not in allowed:
            problems.append((_line(node), (), f"unsupported YAML tag '{_show_tag(node.tag)}': {_ALLOWED_HINT}"))

    def visit(node: Node, depth: int) -> int:
        if node in sizes:
            if depth + heights[node] > MAX_DEPTH:
                raise too_deep(node)
            return sizes[node]
        if node in active:
            msg = "an alias (*name) refers to a value that contains it; recursive structures are not allowed"
            raise _Problem(_line(node), msg)
        if depth > MAX_DEPTH:
            raise too_deep(node)
        size, height = 1, 1
        if isinstance(node, ScalarNode):
            check_tag(node, _SCALAR_TAGS)
        else:
            active.add(node)
            if isinstance(node, SequenceNode):
                check_tag(node, (_SEQ,))
                children = list(node.value)
            else:
                check_tag(node, (_MAP,))
                children = []
                for key, value in node.value:
                    if isinstance(key, ScalarNode):
                        check_tag(key, _SCALAR_TAGS | {_MERGE})
                        size += 1
                    else:
                        children.append(key)
                    children.append(value)
            for child in children:
                size += visit(child, depth + 1)
                height = max(height, heights[child] + 1)
                if size > MAX_NODES:
                    raise too_big(node)
            active.discard(node)
        sizes[node] = size
        heights[node] = height
        return size

    try:
        visit(root, 1)
    except _Problem as problem:
        return [(problem.line, (), problem.message)]
    return problems


class _Builder:
    """Python values from a checked node graph, with the line of every key path."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.locations: dict[Loc, int] = {}
        self.problems: list[tuple[int | None, Loc, str]] = []

    def build(self, node: Node, path: Loc) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            items = []
            for index, child in enumerate(node.value):
                at: Loc = (*path, index)
                self.locations[at] = _line(child)
                items.append(self.build(child, at))
            return items
        assert isinstance(node, MappingNode), node  # the composer makes only scalars, sequences and mappings
        return self.mapping(node, path)

    def scalar(self, node: ScalarNode, path: Loc) -> Any:
        tag = node.tag
        try:
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return self.loader.construct_yaml_bool(node)
            if tag == _INT:
                return self.loader.construct_yaml_int(node)
            if tag == _FLOAT:
                return self.loader.construct_yaml_float(node)
        except (ValueError, KeyError, TypeError, OverflowError):
            msg = f"cannot read {node.value!r} as {_show_tag(tag)}; fix the value or remove the tag"
            self.problems.append((_line(node), path, msg))
            return None
        return node.value  # str, and any tag already reported

    def mapping(self, node: MappingNode, path: Loc) -> dict[str, Any]:
        merges: list[Node] = []
        own: list[tuple[str, ScalarNode, Node]] = []
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                msg = (
                    f"a key must be a plain name, not {'a list' if isinstance(key_node, SequenceNode) else 'a mapping'}"
                )
                self.problems.append((_line(key_node), path, msg))
                continue
            if key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            key = key_node.value  # keys are names: the text as written ('on', '1' stay strings)
            if key in first_line:
                msg = f"duplicate key (first at line {first_line[key]}); keep only one of them"
                self.problems.append((_line(key_node), (*path, key), msg))
                continue
            first_line[key] = _line(key_node)
            own.append((key, key_node, value_node))

        result: dict[str, Any] = {}
        sources: list[MappingNode] = []
        for merge in merges:
            if isinstance(merge, MappingNode):
                sources.append(merge)
            elif isinstance(merge, SequenceNode) and all(isinstance(item, MappingNode) for item in merge.value):
                sources.extend(merge.value)
            else:
                self.problems.append((_line(merge), path, "'<<' (merge) needs a mapping or a list of mappings"))
        for merged in reversed(sources):  # earlier merge sources win over later ones
            result.update(self.mapping(merged, path))
        for key, key_node, value_node in own:  # the mapping's own keys win over merged ones
            at = (*path, key)
            self.locations[at] = _line(key_node)
            result[key] = self.build(value_node, at)
        return result
