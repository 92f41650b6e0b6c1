"""``dlrm-small``: a DLRM-style click-through-rate model (dense MLP, 26 embedding tables, dot interaction).

The layout follows the DLRM reference model: 13 dense features go through a bottom MLP to a 64-wide
vector, each of the 26 categorical features picks one row of its own 64-wide embedding table, the
27 vectors interact through all pairwise dot products (upper triangle, no diagonal), and the
products, concatenated with the bottom output, go through a top MLP to one click probability.

Torch and numpy are imported inside the methods: the CLI imports this module to list models.
"""

from __future__ import annotations

import functools
import itertools
from typing import TYPE_CHECKING, Any

from harness.api import Model, RegisterModel, hookimpl

if TYPE_CHECKING:
    import numpy as np
    import torch

DENSE_FEATURES = 13
EMBEDDING_DIM = 64
#: rows of the 26 tables: varied cardinalities (a few large, many small, as in Criteo), ~3.8M weights
EMBEDDING_ROWS: tuple[int, ...] = (
    12000,
    10000,
    6700,
    5000,
    4000,
    3000,
    3000,
    2500,
    2000,
    2000,
    1500,
    1500,
    1200,
    1000,
    1000,
    800,
    600,
    500,
    400,
    300,
    200,
    100,
    50,
    20,
    10,
    3,
)
BOTTOM_MLP: tuple[int, ...] = (DENSE_FEATURES, 512, 256, EMBEDDING_DIM)
TOP_HIDDEN: tuple[int, ...] = (512, 256, 1)
NUM_VECTORS = len(EMBEDDING_ROWS) + 1
NUM_INTERACTIONS = NUM_VECTORS * (NUM_VECTORS - 1) // 2
TOP_MLP: tuple[int, ...] = (EMBEDDING_DIM + NUM_INTERACTIONS, *TOP_HIDDEN)


def _mlp_parameters(sizes: tuple[int, ...]) -> int:
    return sum(n_in * n_out + n_out for n_in, n_out in itertools.pairwise(sizes))


def parameter_count() -> int:
    """The number of parameters of the module :meth:`DLRMSmall.build_torch` returns (no torch needed)."""
    return _mlp_parameters(BOTTOM_MLP) + _mlp_parameters(TOP_MLP) + sum(EMBEDDING_ROWS) * EMBEDDING_DIM


@functools.cache
def _module_class() -> type[torch.nn.Module]:
    """The ``nn.Module`` class, defined on first use so that importing this module needs no torch."""
    import torch
    from torch import nn

    def mlp(sizes: tuple[int, ...], last_activation: bool) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(n_in, n_out))
            if last_activation or i < len(sizes) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    class DLRMSmallModule(nn.Module):
        """dense [B,13] float, sparse [B,26] int64 (column i indexes table i) -> click probability [B,1]."""

        def __init__(self) -> None:
            super().__init__()
            self.bottom = mlp(BOTTOM_MLP, last_activation=True)
            # nn.Embedding, not EmbeddingBag: one index per table, and both ONNX export and
            # dynamic quantisation handle it.
            self.embeddings = nn.ModuleList(nn.Embedding(rows, EMBEDDING_DIM) for rows in EMBEDDING_ROWS)
            self.top = mlp(TOP_MLP, last_activation=False)
            rows, cols = torch.triu_indices(NUM_VECTORS, NUM_VECTORS, offset=1)
            # positions of the upper triangle (no diagonal) in the flattened [27, 27] Gram matrix;
            # an integer buffer: .to(dtype) leaves it alone, .to(device) moves it
            self.register_buffer("pairs", rows * NUM_VECTORS + cols, persistent=False)

        def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
            x = self.bottom(dense)
            columns = sparse.unbind(1)  # one call instead of 26 column selects
            vectors = [x] + [table(col) for table, col in zip(self.embeddings, columns, strict=True)]
            t = torch.stack(vectors, dim=1)  # [B, 27, 64]
            gram = torch.bmm(t, t.transpose(1, 2))  # [B, 27, 27]
            products = gram.flatten(1).index_select(1, self.pairs)  # [B, 351]
            return torch.sigmoid(self.top(torch.cat([x, products], dim=1)))

    return DLRMSmallModule


def _init_weights(module: torch.nn.Module) -> None:
    """He-normal Linear weights, N(0, 1/fan_out) biases, embeddings uniform with variance 1/sqrt(dim).

    The embedding scale makes each pairwise dot product ~unit variance, and He init keeps that
    through the ReLU layers, so a fresh model's outputs spread over (0, 1) (std ~0.2 on example
    inputs) instead of all sitting near 0.5 (the DLRM reference init gives std ~0.01 here).
    """
    import math

    from torch import nn

    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            n_out, n_in = sub.weight.shape
            nn.init.normal_(sub.weight, 0.0, math.sqrt(2.0 / n_in))
            nn.init.normal_(sub.bias, 0.0, math.sqrt(1.0 / n_out))
        elif isinstance(sub, nn.Embedding):
            bound = math.sqrt(3.0) * EMBEDDING_DIM**-0.25  # uniform(-b, b) has variance b^2 / 3
            nn.init.uniform_(sub.weight, -bound, bound)


class DLRMSmall(Model):
    name = "dlrm-small"
    description = (
        "DLRM-style click-through model: 13 dense features, bottom MLP 13-512-256-64, "
        "26 embedding tables (dim 64), pairwise dot interaction, top MLP 415-512-256-1, sigmoid; ~4.3M parameters"
    )
    input_names = ("dense", "sparse")
    output_names = ("click_probability",)
    task = "ctr"

    def build_torch(self, seed: int = 0) -> torch.nn.Module:
        """The module in eval mode, float32 on the CPU, weights from ``seed`` (global RNG state is kept)."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = _module_class()()
            with torch.no_grad():
                _init_weights(module)
        return module.eval()

    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
        """``dense`` standard normal float32 [B,13]; ``sparse`` int64 [B,26], column i uniform over table i's rows."""
        import numpy as np

        rng = np.random.default_rng(seed)
        dense = rng.standard_normal((batch_size, DENSE_FEATURES), dtype=np.float32)
        sparse = rng.integers(0, np.asarray(EMBEDDING_ROWS), size=(batch_size, len(EMBEDDING_ROWS)), dtype=np.int64)
        return {"dense": dense, "sparse": sparse}

    def validation_set(self, n_samples: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Inputs under their own seed, and click labels drawn from a fixed teacher: the fp32 model
        itself, each label a Bernoulli draw of its click probability (fixed RNG). The reference's
        AUC on them is the ceiling a lower precision can only lose."""
        import numpy as np
        import torch

        inputs = self.example_inputs(n_samples, seed + 20_000)
        with torch.inference_mode():
            prob = self.build_torch()(*(torch.from_numpy(inputs[n]) for n in self.input_names)).numpy().ravel()
        labels = (np.random.default_rng(seed + 30_000).random(n_samples) < prob).astype(np.int8)
        return inputs, labels

    def params(self) -> dict[str, Any]:
        return {
            "parameters": parameter_count(),
            "embedding_tables": len(EMBEDDING_ROWS),
            "dense_features": DENSE_FEATURES,
        }


@hookimpl
def bench_register_models(register: RegisterModel) -> None:
    register(DLRMSmall)
