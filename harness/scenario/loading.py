"""Reading a scenario file: size limit, decoding, safe YAML, validation; every problem one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NoReturn

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from harness.errors import ScenarioError
from harness.scenario.messages import _format, _raise_problems
from harness.scenario.model_ref import RegistriesSource
from harness.scenario.safe_yaml import _NULL, MAX_SCENARIO_BYTES, _Builder, _check_graph, _compose, _line, _Loader
from harness.scenario.schema import Scenario
from harness.scenario.validation import _validate


def _too_big(source: str, size: int | None) -> ScenarioError:
    have = f"{size:,} bytes" if size is not None else f"more than {MAX_SCENARIO_BYTES:,} bytes"
    msg = f"file is {have}, over the limit of {MAX_SCENARIO_BYTES:,} bytes for a scenario; is this the right file?"
    return ScenarioError(_format(source, None, (), msg))


def _read(path: Path, source: str) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        return _fail(source, "no such file; check the path (for example scenarios/rec.yaml)")
    except OSError as exc:
        return _fail(source, f"cannot read: {exc.strerror or exc}")
    if stat.S_ISDIR(info.st_mode):
        return _fail(source, "is a directory; give the path of a scenario .yaml file")
    if not stat.S_ISREG(info.st_mode):
        return _fail(source, "is not a regular file; give the path of a scenario .yaml file")
    if info.st_size > MAX_SCENARIO_BYTES:
        raise _too_big(source, info.st_size)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SCENARIO_BYTES + 1)
    except OSError as exc:
        return _fail(source, f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_SCENARIO_BYTES:
        raise _too_big(source, None)
    return data


def _fail(source: str, message: str) -> NoReturn:
    raise ScenarioError(_format(source, None, (), message))


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        msg = f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); save the file as UTF-8"
        raise ScenarioError(_format(source, line, (), msg)) from None


def _node_kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        return f"a single value ({node.value!r})"
    return "a mapping"


def _load(
    text: str, source: str, path: Path | None, base_dir: Path | None = None, registries: RegistriesSource = None
) -> Scenario:
    root = _compose(text, source)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL and root.value in ("", "~")):
        raise ScenarioError(
            _format(source, None, (), "file is empty; a scenario needs at least name, model, backends and batch_sizes")
        )
    _raise_problems(source, _check_graph(root))
    if not isinstance(root, MappingNode):
        msg = f"the top level must be a mapping of keys (name: ..., backends: ...), not {_node_kind(root)}"
        raise ScenarioError(_format(source, _line(root), (), msg))
    loader = _Loader("")
    builder = _Builder(loader)
    builder.locations[()] = _line(root)
    try:
        data = builder.build(root, ())
    finally:
        loader.dispose()
    _raise_problems(source, builder.problems)
    if base_dir is None and path is not None:
        base_dir = Path(os.path.abspath(path)).parent
    scenario = _validate(data, source, builder.locations, base_dir, registries)
    scenario._source_path = path
    scenario._source_name = source
    scenario._source_text = text
    scenario._locations = builder.locations
    return scenario


def load_scenario(path: str | os.PathLike[str], *, registries: RegistriesSource = None) -> Scenario:
    """Read, check and validate a scenario file; raise :class:`ScenarioError` on any problem.

    ``registries`` (the registries, or a function that builds them) gives the model shorthands
    (``model: {onnx: FILE}``): pass the plugins the command loads; ``None`` takes the default
    plugins. They are asked only when ``model:`` may use a shorthand."""
    source = os.fspath(path)
    file = Path(source)
    text = _decode(_read(file, source), source)
    return _load(text, source, file, registries=registries)


def load_scenario_text(
    text: str,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    *,
    registries: RegistriesSource = None,
) -> Scenario:
    """Validate a scenario given as text (tests, stored copies); ``source`` names it in messages.

    ``base_dir`` is the folder relative model file paths (``model: {onnx: FILE}``) are taken from:
    the original scenario file's folder for a stored copy; the current folder when not given.
    ``registries``: as for :func:`load_scenario`.
    """
    if len(text) > MAX_SCENARIO_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SCENARIO_BYTES:
        raise _too_big(source, len(text.encode("utf-8", "surrogatepass")))
    folder = Path(os.path.abspath(base_dir)) if base_dir is not None else None
    return _load(text, source, None, folder, registries)
