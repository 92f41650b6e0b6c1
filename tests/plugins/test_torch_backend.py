"""The pytorch backend, with real torch on dlrm-small: verdicts, eager, int8, compile, threads, CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.api import CACHE_DIR_ENV, Support
from harness.cells import Cell
from harness.environment import INTERESTING_FLAGS
from harness.errors import SkipCell
from plugins import torch_backend
from plugins.models.dlrm import DLRMSmall
from plugins.torch_backend import TorchBackend, TorchSession, cpu_flags

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'bench[torch]')")

ROOT = Path(__file__).resolve().parents[2]
NO_CUDA = not torch.cuda.is_available()


def cell(device: str = "cpu", precision: str = "fp32", batch_size: int = 4, threads: int = 2, **options: Any) -> Cell:
    return Cell("dlrm-small", "pytorch", device, precision, batch_size, threads, backend_options=options)


@pytest.fixture(autouse=True)
def keep_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> DLRMSmall:
    return DLRMSmall()


@pytest.fixture
def prepared(model: DLRMSmall, tmp_path: Path) -> Iterator[Any]:
    """prepare(cell) -> session, closing every session at the end of the test."""
    sessions: list[Any] = []

    def make(c: Cell) -> TorchSession:
        session = TorchBackend().prepare(model, c, tmp_path)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()


def reference(model: DLRMSmall, batch_size: int, dtype: torch.dtype = torch.float32) -> np.ndarray:
    module = model.build_torch().to(dtype)
    inputs = model.example_inputs(batch_size)
    with torch.inference_mode():
        out = module(torch.from_numpy(inputs["dense"]).to(dtype), torch.from_numpy(inputs["sparse"]))
    return out.float().numpy()


# --- declarations and verdicts (no torch needed by the backend) -------------------------------------


def test_declarations() -> None:
    assert TorchBackend.name == "pytorch"
    assert TorchBackend.devices == ("cpu", "cuda")
    assert TorchBackend.precisions == ("fp32", "fp16", "bf16", "int8")
    assert set(TorchBackend.options) == {"mode", "compile_mode", "transfers", "tf32"}
    assert TorchBackend.availability().ok


def test_registers_through_hook() -> None:
    registered: list[type] = []
    torch_backend.bench_register_backends(register=registered.append)
    assert registered == [TorchBackend]


def test_import_and_supports_do_not_import_torch() -> None:
    code = (
        "import sys; from harness.cells import Cell; from plugins.torch_backend import TorchBackend as B; "
        "[B.supports(Cell('m', 'pytorch', d, p, 1, 1)) for d in ('cpu', 'cuda') for p in B.precisions]; "
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_cpu_flags_read_proc_cpuinfo() -> None:
    flags = cpu_flags()
    assert isinstance(flags, frozenset)
    assert cpu_flags() is flags  # read once
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        first = next(line for line in cpuinfo.read_text().splitlines() if line.startswith(("flags", "Features")))
        present = set(first.partition(":")[2].split())
        assert flags == present & set(INTERESTING_FLAGS)


def test_supports_fp32_and_modes() -> None:
    assert TorchBackend.supports(cell()) == Support.yes()
    assert TorchBackend.supports(cell(mode="eager")).ok
    assert TorchBackend.supports(cell(mode="compile")).ok
    assert TorchBackend.supports(cell(mode="compile", compile_mode="max-autotune")).ok
    assert TorchBackend.supports(cell(device="cuda", precision="fp16")).ok  # GPU presence is prepare's business
    assert TorchBackend.supports(cell(device="cuda:1", precision="bf16", mode="compile")).ok


def test_supports_cpu_fp16_no() -> None:
    verdict = TorchBackend.supports(cell(precision="fp16"))
    assert not verdict.ok and "fp16 on CPU" in verdict.reason


def test_supports_cpu_bf16_follows_real_cpu_flags() -> None:
    verdict = TorchBackend.supports(cell(precision="bf16"))
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    assert verdict.ok == native
    if not native:
        assert "no native bf16" in verdict.reason and "emulated" in verdict.reason


@pytest.mark.parametrize(
    ("flags", "ok"),
    [(frozenset({"avx2"}), False), (frozenset({"avx2", "avx512_bf16"}), True), (frozenset({"amx_bf16"}), True)],
)
def test_supports_cpu_bf16_by_flag(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], ok: bool) -> None:
    monkeypatch.setattr(torch_backend, "cpu_flags", lambda: flags)
    verdict = TorchBackend.supports(cell(precision="bf16"))
    assert verdict.ok == ok
    if not ok:
        assert verdict.reason == "this CPU has no native bf16 (avx512_bf16/amx_bf16 absent): bf16 would be emulated"


def test_supports_cuda_int8_no() -> None:
    verdict = TorchBackend.supports(cell(device="cuda", precision="int8"))
    assert not verdict.ok and "CPU only" in verdict.reason


def test_supports_unknown_option_mode_and_compile_mode() -> None:
    verdict = TorchBackend.supports(cell(fuse=True))
    assert not verdict.ok and "no option fuse" in verdict.reason
    verdict = TorchBackend.supports(cell(mode="jit"))
    assert not verdict.ok and "'jit'" in verdict.reason and "eager, compile" in verdict.reason
    verdict = TorchBackend.supports(cell(mode="compile", compile_mode="fastest"))
    assert not verdict.ok and "'fastest'" in verdict.reason
    verdict = TorchBackend.supports(cell(compile_mode="default"))
    assert not verdict.ok and "only with mode=compile" in verdict.reason


def test_supports_transfers_on_cuda_only() -> None:
    verdict = TorchBackend.supports(cell(transfers="include"))
    assert not verdict.ok and "applies to cuda cells" in verdict.reason
    assert TorchBackend.supports(cell(device="cuda", precision="fp16", transfers="include")).ok
    verdict = TorchBackend.supports(cell(device="cuda", transfers="both"))
    assert not verdict.ok and "'both'" in verdict.reason


def test_supports_unknown_device_and_precision() -> None:
    assert not TorchBackend.supports(cell(device="tpu")).ok
    assert not TorchBackend.supports(cell(precision="fp8")).ok


# --- prepare / run / outputs ----------------------------------------------------------------------


def test_eager_fp32_matches_plain_module_exactly(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell(batch_size=8))
    session.run()
    out = session.outputs()
    assert list(out) == ["click_probability"]
    assert out["click_probability"].dtype == np.float32 and out["click_probability"].shape == (8, 1)
    np.testing.assert_array_equal(out["click_probability"], reference(model, 8))
    info = session.info
    assert info["executed_precision"] == "fp32" and info["mode"] == "eager"
    assert info["torch_version"] == torch.__version__
    assert info["threads"] == torch.get_num_threads() == 2
    assert isinstance(info["interop_threads"], int)
    assert info["interop_threads"] == 1 or "interop_threads_note" in info
    assert "compile_s" not in info and "device_name" not in info
    assert session.call_times() is None and "transfers" not in info  # CPU: no CUDA events, nothing to transfer


def test_outputs_do_not_alias_between_calls(prepared: Any) -> None:
    session = prepared(cell(batch_size=2))
    first = session.outputs()["click_probability"]
    second = session.outputs()["click_probability"]
    assert first is not second and not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, second)


def test_run_leaves_no_inference_mode_behind(prepared: Any) -> None:
    session = prepared(cell(batch_size=1))
    session.run()
    assert not torch.is_inference_mode_enabled()


def test_threads_honoured(prepared: Any) -> None:
    session = prepared(cell(batch_size=1, threads=1))
    assert torch.get_num_threads() == 1
    assert session.info["threads"] == 1


def test_int8_dynamic_quantisation(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell(precision="int8", batch_size=32))
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    linears = [m for m in session.module.modules() if isinstance(m, torch.nn.Linear | dynamic_linear)]
    assert len(linears) == 6 and all(isinstance(m, dynamic_linear) for m in linears)
    out = session.outputs()["click_probability"]
    fp32 = reference(model, 32)
    assert out.dtype == np.float32
    assert np.abs(out - fp32).max() < 0.1
    assert not np.array_equal(out, fp32)
    assert session.info["executed_precision"] == "int8"
    assert "quantize_dynamic" in session.info["quantization"]


def test_int8_quantisation_is_quiet(model: DLRMSmall, prepared: Any, recwarn: pytest.WarningsRecorder) -> None:
    prepared(cell(precision="int8", batch_size=1))
    assert not [w for w in recwarn if "quantiz" in str(w.message)]


@pytest.mark.skipif(
    not cpu_flags() & {"avx512_bf16", "amx_bf16"}, reason="this CPU has no native bf16 (avx512_bf16/amx_bf16)"
)
def test_cpu_bf16(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell(precision="bf16", batch_size=16))
    out = session.outputs()["click_probability"]
    assert out.dtype == np.float32
    assert np.abs(out - reference(model, 16)).max() < 0.05
    assert session.info["executed_precision"] == "bf16"


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is visible")
def test_cuda_without_device_is_skipped(model: DLRMSmall, tmp_path: Path) -> None:
    with pytest.raises(SkipCell, match=r"no CUDA device visible to torch \(torch.cuda.is_available\(\) is False\)"):
        TorchBackend().prepare(model, cell(device="cuda", precision="fp16"), tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="no CUDA device")
def test_cuda_fp16_close_to_fp32(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell(device="cuda", precision="fp16", batch_size=64))
    session.run()
    out = session.outputs()["click_probability"]
    assert out.dtype == np.float32 and out.shape == (64, 1)
    assert np.abs(out - reference(model, 64)).max() < 1e-2
    info = session.info
    assert info["executed_precision"] == "fp16" and info["device_name"]
    assert info["gpu_mem_allocated_mb"] > 0 and info["gpu_mem_reserved_mb"] >= info["gpu_mem_allocated_mb"]


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="no CUDA device")
@pytest.mark.parametrize("transfers", ["exclude", "include"])
def test_cuda_events_time_each_call_of_a_window(model: DLRMSmall, prepared: Any, transfers: str) -> None:
    session = prepared(cell(device="cuda", precision="fp16", batch_size=64, transfers=transfers))
    assert session.info["transfers"] == transfers
    timer = session.call_times()
    session.run()  # no window open: not kept
    timer.start()
    for _ in range(20):
        session.run()
    compute, enqueue = timer.stop()
    assert compute.size == enqueue.size == 20
    assert (compute > 0).all() and (enqueue > 0).all()
    assert ("outside" in timer.what) == (transfers == "include")
    out = session.outputs()["click_probability"]
    assert np.abs(out - reference(model, 64)).max() < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="no CUDA device")
def test_cuda_replicas_run_on_streams_of_their_own(model: DLRMSmall, prepared: Any) -> None:
    import threading

    import torch

    session = prepared(cell(device="cuda", batch_size=64))
    twins = [session.replica() for _ in range(2)]
    streams = {id(t._stream) for t in twins}
    assert len(streams) == 2 and all(t._stream is not None for t in twins) and session._stream is None
    assert all(t._stream != torch.cuda.default_stream(t._device) for t in twins)
    calls = [threading.Thread(target=lambda t=t: [t.run() for _ in range(50)]) for t in (session, *twins)]
    for call in calls:
        call.start()
    for call in calls:
        call.join()
    for each in (session, *twins):
        assert np.abs(each.outputs()["click_probability"] - reference(model, 64)).max() < 1e-4


def test_prepare_refuses_what_supports_refuses(model: DLRMSmall, tmp_path: Path) -> None:
    with pytest.raises(SkipCell, match="fp16 on CPU"):
        TorchBackend().prepare(model, cell(precision="fp16"), tmp_path)
    with pytest.raises(SkipCell, match="'jit'"):
        TorchBackend().prepare(model, cell(mode="jit"), tmp_path)


# --- torch.compile (slow: two cells only) ---------------------------------------------------------


@pytest.mark.slow
def test_compile_fp32_batch1(model: DLRMSmall, tmp_path: Path) -> None:
    tempdir_before = tempfile.tempdir
    env_before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    tmpdir_env_before = os.environ.get("TMPDIR")
    session = TorchBackend().prepare(model, cell(batch_size=1, mode="compile"), tmp_path)
    try:
        assert session.info["mode"] == "compile" and session.info["compile_mode"] == "default"
        assert session.info["compile_s"] > 0
        assert session.info["compiled_graphs"] == 1 and session.info["graph_breaks"] == 0
        session.run()
        out = session.outputs()["click_probability"]
        np.testing.assert_allclose(out, reference(model, 1), rtol=0, atol=1e-5)
        inductor = tmp_path / "torchinductor"
        assert inductor.is_dir() and any(p.is_file() for p in inductor.rglob("*"))
    finally:
        session.close()
    assert tempfile.tempdir == tempdir_before
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == env_before
    assert os.environ.get("TMPDIR") == tmpdir_env_before


@pytest.mark.slow
def test_compile_reuses_the_shared_cache(model: DLRMSmall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    infos = []
    for _ in range(2):  # the second compile of the same graph loads the first one's kernels
        session = TorchBackend().prepare(model, cell(batch_size=2, mode="compile"), tmp_path / "work")
        infos.append(session.info)
        session.close()
        torch._dynamo.reset()  # forget the compiled frame in memory, as a new worker process would
    shared = tmp_path / "cache" / "torchinductor"
    assert infos[0]["compile_cache_dir"] == str(shared)
    assert infos[0]["compile_cache_misses"] >= 1
    assert (infos[1]["compile_cache_hits"], infos[1]["compile_cache_misses"]) == (infos[0]["compile_cache_misses"], 0)
    assert any(p.suffix == ".so" for p in shared.rglob("*"))
    assert not (tmp_path / "work" / "torchinductor" / "fxgraph").exists()  # kernels went to the cache


@pytest.mark.slow
def test_compile_fp32_small_batch(model: DLRMSmall, prepared: Any) -> None:
    session = prepared(cell(batch_size=4, mode="compile"))
    session.run()
    np.testing.assert_allclose(session.outputs()["click_probability"], reference(model, 4), rtol=0, atol=1e-5)


def test_tf32_option_is_for_fp32_cuda_cells() -> None:
    """A sweep over tf32 keeps one fp16/bf16 cell (under tf32=false): TF32 is how fp32 matmuls compute."""
    assert TorchBackend.supports(cell(device="cuda", tf32=True)).ok
    assert TorchBackend.supports(cell(device="cuda", precision="fp16", tf32=False)).ok
    verdict = TorchBackend.supports(cell(tf32=True))
    assert not verdict.ok and "option tf32 applies to cuda cells" in verdict.reason
    verdict = TorchBackend.supports(cell(device="cuda", precision="bf16", tf32=True))
    assert not verdict.ok and verdict.reason == (
        "option tf32 applies only with precision fp32 (TF32 is how fp32 matmuls may compute: this bf16 cell "
        "would repeat the one with tf32=false)"
    )


@pytest.fixture
def torch_tf32_restored() -> Iterator[None]:
    """torch's own defaults back after the test (matmuls without TF32, cuDNN convolutions with it)."""
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    if hasattr(torch.backends.cudnn, "fp32_precision"):
        torch.backends.cudnn.fp32_precision = "none"


@pytest.mark.usefixtures("torch_tf32_restored")
def test_set_tf32_sets_matmuls_and_convolutions_alike() -> None:
    """torch's defaults differ (cuDNN convolutions use TF32, matmuls do not): a cuda cell sets both, and
    torch's getters, old and new, read back the same state without raising."""
    for allowed in (True, False):
        torch_backend._set_tf32(torch, allowed)
        assert torch.backends.cuda.matmul.allow_tf32 is allowed
        assert torch.backends.cudnn.allow_tf32 is allowed
        assert torch.get_float32_matmul_precision() == ("high" if allowed else "highest")
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch 2.9's API, which inductor reads
            assert torch.backends.cuda.matmul.fp32_precision == ("tf32" if allowed else "ieee")
            assert torch.backends.cudnn.fp32_precision == ("tf32" if allowed else "ieee")
            assert torch.backends.cudnn.conv.fp32_precision == ("tf32" if allowed else "ieee")


def test_tf32_allowed_yields_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.api import tf32_allowed

    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    info: dict[str, Any] = {}
    assert tf32_allowed(True, info) is True and info == {"tf32": True}
    info = {}
    assert tf32_allowed(False, info) is False and info == {"tf32": False}
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    info = {}
    assert tf32_allowed(True, info) is False and "NVIDIA_TF32_OVERRIDE=0" in info["tf32_note"]


def test_probe_names_each_gpu_with_its_compute_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench doctor`` says what each GPU's cells can run (bf16 and TF32 from 8.0): torch's answers
    for two GPUs stood in for here."""
    import torch

    names, capabilities = ["NVIDIA H200", "Tesla T4"], [(9, 0), (7, 5)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: names[index])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capabilities[index])
    facts = TorchBackend.probe()
    assert facts["cuda_devices"] == names and facts["cuda_capabilities"] == ["9.0", "7.5"]
    assert "(NVIDIA H200: compute capability 9.0; Tesla T4: compute capability 7.5)" in facts["summary"]
