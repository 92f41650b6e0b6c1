"""A model that cannot be built, for the conformance suite: every backend must report it as a failed cell."""

from __future__ import annotations

from typing import Any

from harness import hookimpl
from harness.api import Model

MESSAGE = "conformance-broken: injected failure while building the model"


class BrokenModel(Model):
    name = "conformance-broken"
    description = "raises when built or asked for inputs (conformance suite only)"
    input_names = ("x",)
    output_names = ("y",)

    def build_torch(self) -> Any:
        raise RuntimeError(MESSAGE)

    def example_inputs(self, batch_size: int, seed: int = 0) -> Any:
        raise RuntimeError(MESSAGE)


@hookimpl
def bench_register_models(register: Any) -> None:
    register(BrokenModel)
