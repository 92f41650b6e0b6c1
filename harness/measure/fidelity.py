"""Fidelity: how far a cell's outputs are from the full-precision reference, and what that costs the task.

Once per run a worker computes the reference (the model's fp32 PyTorch eager outputs on its fixed
validation set, and its labels where it has them; onnxruntime's, graph optimisations off, for a
model that is only an ONNX file) into ``reference/<model>.npz`` in the run folder, with the
model's FLOPs per sample and the machine's measured matrix-multiply peak. Each cell then
runs the same validation set through its own prepared session (in chunks of its batch size) and
compares: max and mean absolute error, cosine similarity, the task's agreement measure and, with
labels, the task metric. Nothing here imports a runtime at module level.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from harness.records import ReferenceJob

#: least cosine similarity to the reference a precision passes with, unless the scenario says otherwise
DEFAULT_MIN_COSINE = {"fp32": 0.999, "fp16": 0.995, "bf16": 0.995, "int8": 0.99}
REFERENCE_FOLDER = "reference"


def reference_path(run_dir: Path, model: str) -> Path:
    return run_dir / REFERENCE_FOLDER / f"{model}.npz"


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None with one class only."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def agreement(task: str, out: np.ndarray, ref: np.ndarray) -> float | None:
    """The task's agreement of ``out`` with ``ref`` (rows are samples), or None for other tasks."""
    if task == "ctr":
        return float(np.mean((out.ravel() > 0.5) == (ref.ravel() > 0.5)))
    if task == "classification":
        return float(np.mean(out.reshape(len(out), -1).argmax(1) == ref.reshape(len(ref), -1).argmax(1)))
    if task == "embedding":
        a = out.reshape(len(out), -1).astype(np.float64)
        b = ref.reshape(len(ref), -1).astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return float(np.mean(np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)))
    return None


def compare(
    outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], task: str, labels: np.ndarray | None
) -> dict[str, Any]:
    """Errors against the reference over every output, agreement and task metric on the first."""
    out_all = np.concatenate([np.asarray(outputs[k], dtype=np.float64).ravel() for k in reference])
    ref_all = np.concatenate([np.asarray(reference[k], dtype=np.float64).ravel() for k in reference])
    diff = np.abs(out_all - ref_all)
    denom = float(np.linalg.norm(out_all) * np.linalg.norm(ref_all))
    first = next(iter(reference))
    result: dict[str, Any] = {
        "max_abs_error": float(diff.max()) if diff.size else None,
        "mean_abs_error": float(diff.mean()) if diff.size else None,
        "cosine": float(out_all @ ref_all / denom) if denom > 0 else None,
        "agreement": agreement(task, np.asarray(outputs[first]), np.asarray(reference[first])),
        "outputs_finite": bool(np.isfinite(out_all).all()),
    }
    if labels is not None and task == "ctr":
        result["task_metric"] = "auc"
        result["task_value"] = auc(labels, np.asarray(outputs[first]))
        result["reference_task_value"] = auc(labels, np.asarray(reference[first]))
    elif labels is not None and task == "classification":

        def accuracy(values: np.ndarray) -> float:
            return float(np.mean(values.reshape(len(values), -1).argmax(1) == labels.ravel()))

        result["task_metric"] = "accuracy"
        result["task_value"] = accuracy(np.asarray(outputs[first]))
        result["reference_task_value"] = accuracy(np.asarray(reference[first]))
    return result


def verdict(result: dict[str, Any], precision: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Pass or fail against the precision's least cosine and the scenario's least agreement."""
    min_cosine = {**DEFAULT_MIN_COSINE, **(settings.get("min_cosine") or {})}.get(precision, 0.99)
    min_agreement = settings.get("min_agreement")
    reasons = []
    if result.get("cosine") is None or result["cosine"] < min_cosine:
        reasons.append(f"cosine {result.get('cosine')} < {min_cosine:g} ({precision})")
    if min_agreement is not None and result.get("agreement") is not None and result["agreement"] < min_agreement:
        reasons.append(f"agreement {result['agreement']:.4f} < {min_agreement:g}")
    if not result.get("outputs_finite", True):
        reasons.append("non-finite outputs")
    return {"fidelity_ok": not reasons, "fidelity_reason": "; ".join(reasons), "min_cosine": min_cosine}


# --------------------------------------------------------------------------------------------
# the reference job (in a worker: imports torch)
# --------------------------------------------------------------------------------------------


def _matmul_peak_gflops(threads: int, seconds: float = 1.5) -> dict[str, Any]:
    """This machine's fp32 matrix-multiply rate: the best call of torch.mm and of numpy's BLAS at
    n = 512, 1024 and 2048 on ``threads`` threads, as GFLOP/s (a measured ceiling, not the data
    sheet's; int8 and bf16 kernels can exceed it)."""
    import torch

    torch.set_num_threads(threads)
    best, how = 0.0, ""
    sizes = (512, 1024, 2048)
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        an, bn = a.numpy(), b.numpy()
        for name, call in (("torch.mm", lambda: torch.mm(a, b)), ("numpy matmul", lambda: an @ bn)):  # noqa: B023
            call()
            end = time.perf_counter() + seconds / (2 * len(sizes))
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                call()
                rate = 2 * n**3 / (time.perf_counter() - t0) / 1e9
                if rate > best:
                    best, how = rate, f"{name} n={n}"
    return {"peak_gflops": best, "peak_method": f"fp32 matmul, best call: {how}, {threads} threads"}


def _flops_per_sample(module: Any, inputs: dict[str, np.ndarray], names: tuple[str, ...], batch: int) -> float | None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        module(*(torch.from_numpy(np.ascontiguousarray(inputs[n][:batch])) for n in names))
    total = counter.get_total_flops()
    return float(total) / batch if total else None


def run_reference(job: ReferenceJob, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute a model's reference outputs, labels and FLOPs, and the machine's peak, into the run.

    The reference is the model's fp32 PyTorch eager module; a model that has none but its own ONNX
    file (``model: {onnx: FILE}``) is run on onnxruntime's CPU provider with graph optimisations
    off instead (no FLOPs then: the counter is torch's). ``context`` gets the model once built."""
    from harness.input_data import build_model
    from harness.pluginmanager import registries

    regs = registries(job.plugins, autoload=job.autoload)
    model = build_model(regs.models.get(job.model), job.model_options, job.input_data)
    if context is not None:
        context["model"] = model
    out_path = Path(job.path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    facts: dict[str, Any] = {"model": model.name, "task": model.task, "samples": job.samples}
    facts.update(_matmul_peak_gflops(job.threads))
    support = model.torch_support()
    own_onnx = model.onnx_file()
    if not support.ok and (own_onnx is None or importlib.util.find_spec("onnxruntime") is None):
        facts["fidelity_skipped"] = f"no PyTorch reference: {support.reason}"
        return facts
    inputs, labels = model.validation_set(job.samples, job.seed)
    n = len(next(iter(inputs.values())))
    t0 = time.perf_counter()
    if support.ok:
        import torch

        module = model.build_torch().eval()
        torch.set_num_threads(job.threads)
        reference = _torch_outputs(module, inputs, model.input_names, model.output_names)
        facts["reference_runtime"] = f"pytorch {torch.__version__} eager fp32"
        facts["flops_per_sample"] = _flops_per_sample(module, inputs, model.input_names, min(8, n))
    else:
        assert own_onnx is not None  # the condition above
        reference, facts["reference_runtime"] = _onnxruntime_outputs(Path(own_onnx), inputs, model, job.threads)
        facts["flops_per_sample"] = None
    facts["reference_s"] = time.perf_counter() - t0
    arrays = {f"input:{k}": v for k, v in inputs.items()}
    arrays.update({f"output:{k}": v for k, v in reference.items()})
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    tmp = out_path.with_name(out_path.name + ".tmp.npz")
    np.savez(tmp, allow_pickle=False, **arrays)
    tmp.replace(out_path)
    facts["path"] = str(out_path)
    if labels is not None and model.task == "ctr":
        facts["reference_auc"] = auc(labels, reference[model.output_names[0]])
    (out_path.with_suffix(".json")).write_text(json.dumps(facts, indent=2, default=str))
    return facts


#: samples per call when computing a reference
_REFERENCE_CHUNK = 256


def _torch_outputs(
    module: Any, inputs: dict[str, np.ndarray], input_names: tuple[str, ...], output_names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    import torch

    outs: dict[str, list[np.ndarray]] = {name: [] for name in output_names}
    n = len(next(iter(inputs.values())))
    with torch.inference_mode():
        for start in range(0, n, _REFERENCE_CHUNK):
            args = (
                torch.from_numpy(np.ascontiguousarray(inputs[k][start : start + _REFERENCE_CHUNK])) for k in input_names
            )
            result = module(*args)
            parts = result if isinstance(result, tuple | list) else (result,)
            for name, part in zip(output_names, parts, strict=True):
                outs[name].append(part.float().numpy())
    return {name: np.concatenate(parts) for name, parts in outs.items()}


def _onnxruntime_outputs(
    path: Path, inputs: dict[str, np.ndarray], model: Any, threads: int
) -> tuple[dict[str, np.ndarray], str]:
    """The ONNX file's outputs on onnxruntime's CPU provider, graph optimisations off (the graph
    run as written, no fused kernels), and how they were computed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outs: dict[str, list[np.ndarray]] = {name: [] for name in model.output_names}
    n = len(next(iter(inputs.values())))
    for start in range(0, n, _REFERENCE_CHUNK):
        feeds = {k: np.ascontiguousarray(inputs[k][start : start + _REFERENCE_CHUNK]) for k in model.input_names}
        for name, part in zip(model.output_names, session.run(list(model.output_names), feeds), strict=True):
            outs[name].append(np.asarray(part, dtype=np.float32))
    how = f"onnxruntime {ort.__version__} CPU fp32, graph optimisations off (the model has no PyTorch form)"
    return {name: np.concatenate(parts) for name, parts in outs.items()}, how


def load_reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray | None]:
    """(inputs, reference outputs, labels or None) of a reference file."""
    with np.load(path, allow_pickle=False) as data:
        inputs = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("input:")}
        outputs = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("output:")}
        labels = data["labels"] if "labels" in data.files else None
    return inputs, outputs, labels


def evaluate(session: Any, batch_size: int, path: Path, task: str) -> dict[str, Any]:
    """Run the validation set through ``session`` in chunks of its batch (the last one padded with
    repeats of its first sample, the padding dropped) and compare with the reference."""
    inputs, reference, labels = load_reference(path)
    n = len(next(iter(inputs.values())))
    collected: dict[str, list[np.ndarray]] = {name: [] for name in reference}
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        chunk = {}
        for name, values in inputs.items():
            part = values[start:stop]
            if len(part) < batch_size:
                pad = np.repeat(part[:1], batch_size - len(part), axis=0)
                part = np.concatenate([part, pad])
            chunk[name] = part
        session.set_inputs(chunk)
        outs = session.outputs()
        for name in reference:
            collected[name].append(np.asarray(outs[name])[: stop - start])
    outputs = {name: np.concatenate(parts) for name, parts in collected.items()}
    result = compare(outputs, reference, task, labels)
    result["fidelity_samples"] = n
    result["fidelity_s"] = time.perf_counter() - t0
    return result
