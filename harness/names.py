"""The rule every name a scenario refers to follows (scenario, backend and model names): checked
where a scenario is validated and where a plugin registers a backend or model, so a plugin cannot
register a name no scenario could use."""

from __future__ import annotations

import re

#: letters, digits, '_', '.' and '-': a name that needs no quoting in YAML, file names or cell labels
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
#: what a name may contain, for messages
NAME_RULE = "a name may use only letters, digits, '_', '.' and '-'"


def valid_name(value: str) -> bool:
    """Whether ``value`` follows the name rule (and is not empty)."""
    return NAME_RE.fullmatch(value) is not None
