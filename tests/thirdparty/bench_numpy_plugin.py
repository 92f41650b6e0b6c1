"""A third-party plugin: a pure-numpy backend and model, nothing from bench but its public API."""

from harness import hookimpl
from harness.api import Backend, Model, Session, Support


class Squares(Model):
    name = "squares"
    description = "y = sum(x**2) per sample"
    input_names = ("x",)
    output_names = ("y",)

    def build_torch(self):
        import torch

        class SumOfSquares(torch.nn.Module):
            def forward(self, x):
                return (x * x).sum(dim=1, keepdim=True)

        return SumOfSquares().eval()

    def example_inputs(self, batch_size, seed=0):
        import numpy as np

        return {"x": np.random.default_rng(seed).standard_normal((batch_size, 256)).astype("float32")}


class NumpySession(Session):
    def __init__(self, x):
        super().__init__()
        self.x = x
        self.info = {"executed_precision": "fp32", "runtime": "numpy"}

    def run(self):
        (self.x * self.x).sum(axis=1)

    def outputs(self):
        return {"y": (self.x * self.x).sum(axis=1, keepdims=True)}

    def set_inputs(self, arrays):
        self.x[...] = arrays["x"]


class NumpyBackend(Backend):
    name = "numpy-ref"
    description = "numpy reference backend from a third-party plugin"
    precisions = ("fp32",)

    @classmethod
    def supports(cls, cell):
        if cell.model != "squares":
            return Support.no("numpy-ref serves only the 'squares' model")
        if cell.batch_size > 64:
            return Support.no("numpy-ref serves batches up to 64")
        return super().supports(cell)

    def prepare(self, model, cell, workdir):
        return NumpySession(model.example_inputs(cell.batch_size, cell.seed)["x"])


@hookimpl
def bench_register_backends(register):
    register(NumpyBackend)


@hookimpl
def bench_register_models(register):
    register(Squares)
