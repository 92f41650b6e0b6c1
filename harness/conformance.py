"""The conformance suite every backend passes, shipped so that a plugin package runs it in its own tests.

In a plugin's test file (pytest collects the function under the name it is given)::

    from harness.conformance import conformance_tests

    test_conformance = conformance_tests(backend="my-runtime", model="squares", plugins=["my_plugin"])

That is one test per check and case, a case being backend x model x device x precision (x option
variant), over every device and precision the backend declares:

- ``outputs``: an unavailable combination is a skip with the reason (from ``supports`` or
  ``SkipCell``, which must not be empty), never a crash; otherwise the outputs have the model's
  names and shapes, are finite and match the model's fp32 PyTorch eager outputs on the same inputs
  within the precision's tolerance (:data:`TOLERANCE`), and the session records the precision that
  executed.
- ``repeatable``: ``run()`` leaves the outputs unchanged and a second prepare gives the same numbers.
- ``replicas``: with ``max_concurrency`` > 1, three sessions (``replica()`` or another prepare) run
  side by side on threads and agree; skipped with the reason for a single-stream backend.
- ``set_inputs``: new inputs copied into a prepared session give what a session prepared on them
  gives; skipped with the reason where the session cannot rebind its inputs.

The last three run on the first model given. Plugins come from the ``bench`` entry points (unless
``BENCH_DISABLE_PLUGIN_AUTOLOAD`` or ``autoload=False``) plus the modules named in ``plugins``, which
must be importable. The reference needs torch; without it the ``outputs`` checks skip with that
reason. Needs pytest; nothing here is loaded into pytest unless a test file imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.api import Backend, Model, Session, Support
from harness.cells import Cell
from harness.errors import SkipCell
from harness.pluginmanager import Registries, registries

#: per precision: the largest max abs error (relative to the reference's magnitude where it exceeds 1)
#: and the least cosine similarity allowed against the fp32 reference
TOLERANCE: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 0.99999),
    "fp16": (2e-2, 0.999),
    "bf16": (5e-2, 0.995),
    "int8": (0.35, 0.95),
}
BATCH = 3  # odd on purpose: no runtime may assume a power of two
THREADS = 2
CHECKS = ("outputs", "repeatable", "replicas", "set_inputs")
#: option variants worth covering beyond the defaults, by backend: (options, the precisions to run them at)
Variants = Mapping[str, Sequence[tuple[Mapping[str, Any], Sequence[str]]]]


@dataclass(frozen=True)
class Case:
    """One backend x model x device x precision x options the suite checks."""

    backend: str
    model: str
    device: str
    precision: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.backend}{f'[{opts}]' if opts else ''}-{self.model}-{self.device}-{self.precision}"

    def cell(self, seed: int = 0) -> Cell:
        return Cell(
            model=self.model, backend=self.backend, device=self.device, precision=self.precision,
            batch_size=BATCH, threads=THREADS, seed=seed, backend_options=dict(self.options),
        )  # fmt: skip


def compare(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error, scaled by the reference's magnitude when above 1; cosine similarity)."""
    a = out.astype(np.float64).ravel()
    b = ref.astype(np.float64).ravel()
    max_abs = float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / norms) if norms else float(np.array_equal(a, b))
    return max_abs, cosine


class Suite:
    """The registries the checks run against, the references they compare with, and the checks."""

    def __init__(self, regs: Registries) -> None:
        self.regs = regs
        self._references: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def cases(self, backends: Sequence[str], models: Sequence[str], variants: Variants) -> list[Case]:
        found: list[Case] = []
        for backend in backends:
            cls = self.regs.backends.get(backend)
            for model in models:
                self.regs.models.get(model)  # an unknown name is an error at collection, with the known ones
                for device in cls.devices:
                    found.extend(Case(backend, model, device, precision) for precision in cls.precisions)
                    for options, precisions in variants.get(backend, ()):
                        found.extend(
                            Case(backend, model, device, p, dict(options)) for p in precisions if p in cls.precisions
                        )
        return found

    # -- preparing -------------------------------------------------------------------------------

    @contextmanager
    def sessions(self, workdir: Path) -> Iterator[Callable[..., tuple[Model, Session]]]:
        """``prepare(case, seed=0)`` -> (model, session), or a skip with the reason; all closed after."""
        opened: list[Session] = []

        def prepare(case: Case, seed: int = 0) -> tuple[Model, Session]:
            cell = case.cell(seed)
            backend_cls = self.regs.backends.get(case.backend)
            verdict = backend_cls.supports(cell)
            assert isinstance(verdict, Support), f"{case.backend}.supports() returned {verdict!r}, not a Support"
            if not verdict.ok:
                assert verdict.reason.strip(), "an unsupported combination must say why"
                pytest.skip(f"unsupported here: {verdict.reason}")
            model = self.regs.models.get(case.model)()
            try:
                session = backend_cls().prepare(model, cell, workdir)
            except SkipCell as exc:
                assert str(exc).strip(), "SkipCell must carry a reason"
                pytest.skip(f"skipped at prepare: {exc}")
            opened.append(session)
            return model, session

        try:
            yield prepare
        finally:
            for session in opened:
                session.close()

    def reference(self, model: Model, seed: int = 0) -> dict[str, np.ndarray]:
        """The model's fp32 PyTorch eager outputs on the cell's inputs (computed once per model and seed)."""
        key = (model.name, seed)
        if key not in self._references:
            support = model.torch_support()
            if not support.ok:
                pytest.skip(f"no fp32 PyTorch reference for model '{model.name}': {support.reason}")
            torch = pytest.importorskip("torch", reason="the reference is the model's fp32 PyTorch eager outputs")
            module = model.build_torch().eval()
            inputs = model.example_inputs(BATCH, seed)
            with torch.inference_mode():
                out = module(*(torch.from_numpy(inputs[n]) for n in model.input_names))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            self._references[key] = {name: o.float().numpy() for name, o in zip(model.output_names, outs, strict=True)}
        return self._references[key]

    # -- the checks ------------------------------------------------------------------------------

    def outputs(self, case: Case, workdir: Path) -> None:
        assert case.precision in TOLERANCE, f"precision '{case.precision}' is none of {', '.join(TOLERANCE)}"
        with self.sessions(workdir) as prepare:
            model, session = prepare(case)
            outputs = session.outputs()
            assert set(outputs) == set(model.output_names), f"outputs {sorted(outputs)}, model {model.output_names}"
            ref = self.reference(model)
            max_abs_limit, cosine_limit = TOLERANCE[case.precision]
            for name in model.output_names:
                out = np.asarray(outputs[name])
                assert out.shape == ref[name].shape, f"{name}: shape {out.shape}, reference {ref[name].shape}"
                assert np.isfinite(out).all(), f"{name}: not finite"
                max_abs, cosine = compare(out, ref[name])
                assert max_abs <= max_abs_limit, (
                    f"{name}: max abs error {max_abs:.3g} > {max_abs_limit} ({case.precision})"
                )
                assert cosine >= cosine_limit, f"{name}: cosine {cosine:.6f} < {cosine_limit} ({case.precision})"
            assert session.info.get("executed_precision"), "a session must record the precision that executed"

    def repeatable(self, case: Case, workdir: Path) -> None:
        with self.sessions(workdir) as prepare:
            _, first = prepare(case)
            before = first.outputs()
            for _ in range(3):
                first.run()
            again = first.outputs()
            _, second = prepare(case)
            other = second.outputs()
            for name, value in before.items():
                np.testing.assert_array_equal(again[name], value, err_msg="run() changed later outputs")
                # a second prepare of the same cell: same model, same inputs, same numbers (deterministic
                # kernels may still differ in the last bits between two compiled instances)
                np.testing.assert_allclose(
                    other[name], value, rtol=1e-5, atol=1e-6, err_msg="prepare is not repeatable"
                )

    def replicas(self, case: Case, workdir: Path) -> None:
        backend_cls: type[Backend] = self.regs.backends.get(case.backend)
        if backend_cls.max_concurrency < 2:
            pytest.skip(f"{case.backend} serves one stream (max_concurrency {backend_cls.max_concurrency})")
        with self.sessions(workdir) as prepare:
            model, first = prepare(case)
            expected = first.outputs()
            replicas = [first]
            try:
                for _ in range(2):
                    other = first.replica() or backend_cls().prepare(model, case.cell(), workdir)
                    assert other is not first, "a replica needs inputs of its own"
                    replicas.append(other)
                errors: list[BaseException] = []

                def hammer(session: Session) -> None:
                    try:
                        for _ in range(20):
                            session.run()
                    except BaseException as exc:  # re-raised below, on the test's thread
                        errors.append(exc)

                threads = [threading.Thread(target=hammer, args=(s,)) for s in replicas]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                assert not errors, errors[0]
                for session in replicas:
                    for name, value in session.outputs().items():
                        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)
            finally:
                for session in replicas[1:]:
                    session.close()

    def set_inputs(self, case: Case, workdir: Path) -> None:
        """The accuracy check rebinds the validation set into a prepared session: it must compute on it."""
        with self.sessions(workdir) as prepare:
            model, session = prepare(case)
            seed0 = session.outputs()
            try:
                session.set_inputs(model.example_inputs(BATCH, seed=1))
            except NotImplementedError as exc:
                pytest.skip(f"{case.backend} cannot rebind inputs: {exc}")
            rebound = session.outputs()
            _, fresh = prepare(case, seed=1)
            for name, value in fresh.outputs().items():
                np.testing.assert_allclose(rebound[name], value, rtol=1e-5, atol=1e-6)
            first = model.output_names[0]
            assert not np.allclose(rebound[first], seed0[first]), (
                "seed 1's inputs gave seed 0's outputs: the new values were not used"
            )


def conformance_tests(
    *,
    backend: str | Sequence[str] | None = None,
    model: str | Sequence[str],
    plugins: Sequence[str] = (),
    autoload: bool | None = None,
    variants: Variants | None = None,
    checks: Sequence[str] = CHECKS,
) -> Callable[..., None]:
    """A pytest test function over every check and case of ``backend`` (a name, several, or None for
    every registered backend) on ``model`` (a name or several; the first also runs the behaviour
    checks). Assign it to a ``test_*`` name in a test module."""
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown} (known: {', '.join(CHECKS)})")
    suite = Suite(registries(plugins, autoload=autoload))
    backends = suite.regs.backends.names() if backend is None else [backend] if isinstance(backend, str) else backend
    models = [model] if isinstance(model, str) else list(model)
    cases = suite.cases(list(backends), models, variants or {})
    params = []
    for case in cases:
        for check in checks:
            behaviour = case.model == models[0] and not case.options  # the other checks: defaults, first model
            if check == "outputs" or (behaviour and (check != "replicas" or case.precision == "fp32")):
                params.append(pytest.param(check, case, id=f"{check}-{case.id}"))

    @pytest.mark.parametrize(("check", "case"), params)
    def test_conformance(check: str, case: Case, tmp_path: Path) -> None:
        getattr(suite, check)(case, tmp_path / "work")

    return test_conformance
