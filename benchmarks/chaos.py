"""Chaos: sweeps of the fake backend while faults are injected at random moments, resumed until done.

Injections: SIGKILL of the bench process, SIGKILL of the cell's worker, SIGTERM, a full disk (a
filler written until ENOSPC, on a small tmpfs in a private mount namespace, freed after), and a
damaged sibling run folder in the same results root. After every injection the run folder is
checked for torn files (manifest and tables parse; only the journal's last line may be cut) and
for worker processes that outlived their bench; then the run is resumed, possibly hit again,
until it finishes. At the end every planned cell must be in results.parquet exactly once.

    .venv/bin/python benchmarks/chaos.py [--trials 20] [--cells 8] [--seed 1] [--injections 3]

Prints one line per injection and the totals: injections survived, cells lost, cells duplicated,
undocumented exit codes, torn files, orphaned workers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: exit codes bench documents (README): success, budget/regression, usage, nothing measured, SIGINT, SIGTERM
DOCUMENTED = {0, 1, 2, 3, 130, 143}
FAULTS = ("kill_parent", "kill_worker", "sigterm", "disk_full", "corrupt_sibling")
#: faults after which the bench process is gone (the others let it run on)
STOPPING = ("kill_parent", "sigterm", "disk_full")
TMPFS_MB = 64

SCENARIO = """\
name: chaos
model: toy
backends:
  - name: fake
    options: {{service_ms: 0.2}}
batch_sizes: {batches}
threads: 1
measurement:
  min_duration_s: 0.1
  max_duration_s: 0.2
  warmup_s: 0.02
limits:
  timeout_s: 30
fidelity: {{samples: 0}}
"""


def _bench(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BENCH_PLUGINS": "plugins.fake", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _run_dir(out_root: Path, name: str = "chaos") -> Path | None:
    found = sorted(p.parent for p in out_root.glob(f"*-{name}-*/manifest.json"))
    return found[0] if found else None


def _journal_lines(run_dir: Path | None) -> int:
    if run_dir is None:
        return 0
    try:
        return (run_dir / "journal.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


def _workers_of(out_root: Path) -> list[int]:
    """Worker processes whose temporary folder lies in this results root (ours, not a neighbour's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b"harness.executors.worker" not in cmdline and b"harness.worker" not in cmdline:
                continue
            if str(out_root).encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _torn(run_dir: Path) -> list[str]:
    """Files a reader would find damaged. Only the journal's last line may be cut (a kill mid-write:
    dropped on read, cut off on resume)."""
    import pandas as pd

    torn = []
    try:
        data = json.loads((run_dir / "manifest.json").read_text())
        if not isinstance(data, dict) or "settings" not in data:
            torn.append("manifest.json: wrong shape")
    except (OSError, ValueError) as exc:
        torn.append(f"manifest.json: {exc}")
    lines = (run_dir / "journal.jsonl").read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            json.loads(line)
        except ValueError:
            torn.append(f"journal.jsonl:{number}: not JSON")
    for table in ("results.parquet", "latencies.parquet"):
        if (run_dir / table).exists():
            try:
                pd.read_parquet(run_dir / table)
            except Exception as exc:  # any pyarrow error means a torn table
                torn.append(f"{table}: {exc}")
    torn += [f"temporary left: {p.name}" for p in run_dir.glob(".*.tmp-*")]
    return torn


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()
        except OSError:
            pass
    return filler


def _corrupt_sibling(out_root: Path, rng: random.Random) -> None:
    """A damaged run folder of the same scenario beside the run: a bad journal line, or a manifest
    of the wrong shape."""
    template = _run_dir(out_root)
    sibling = out_root / f"damaged-{rng.randrange(1 << 16):04x}"
    sibling.mkdir(parents=True, exist_ok=True)
    if template is not None and rng.random() < 0.5:
        shutil.copy(template / "manifest.json", sibling / "manifest.json")
        (sibling / "journal.jsonl").write_text('{"cell_id": "a", "status": "ok"}\ngarbage{\n{"cell_id": "b"}\n')
    else:
        (sibling / "manifest.json").write_text(rng.choice(["[]", "null", '{"schema_version": 1}']))
        (sibling / "journal.jsonl").write_text("")


def _inject(fault: str, proc: subprocess.Popen[str], out_root: Path, mnt: Path | None, rng: random.Random) -> str:
    """Wait a random moment into the run, then inject; returns what was done."""
    time.sleep(rng.uniform(0.1, 2.0))
    if proc.poll() is not None:
        return "run ended first"
    if fault == "kill_parent":
        proc.send_signal(signal.SIGKILL)
    elif fault == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif fault == "kill_worker":
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            workers = _workers_of(out_root)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                return "worker killed"
            time.sleep(0.01)
        return "no worker seen"
    elif fault == "disk_full":
        assert mnt is not None
        filler = _fill(mnt)
        try:
            proc.wait(timeout=120)
        finally:
            filler.unlink()
    elif fault == "corrupt_sibling":
        _corrupt_sibling(out_root, rng)
    return "injected"


def trial(index: int, args: argparse.Namespace, base: Path, mnt: Path | None, rng: random.Random) -> dict:
    out_root = base / f"t{index}"
    reports = base / f"reports{index}"
    scenario = base / "chaos.yaml"
    planned = args.cells
    faults = [f for f in FAULTS if f != "disk_full" or mnt is not None]
    stats: Counter[str] = Counter()
    events = []
    command = ["run", str(scenario), "--out", str(out_root), "--reports-dir", str(reports)]
    injected = 0
    run_dir = None
    for attempt in range(args.injections + 20):
        proc = _bench(*command)
        hits = []  # faults injected into this bench process
        while proc.poll() is None and injected < args.injections:
            fault = rng.choice(faults)
            what = _inject(fault, proc, out_root, mnt, rng)
            if what in ("injected", "worker killed"):
                hits.append(fault)
                injected += 1
            if fault in STOPPING:
                break
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            stats["hung"] += 1
        code = proc.returncode
        time.sleep(0.3)  # a killed bench's worker dies by PDEATHSIG: give the kernel a moment
        orphans = _workers_of(out_root)
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        run_dir = _run_dir(out_root)
        torn = _torn(run_dir) if run_dir else []
        documented = code in DOCUMENTED or code == -signal.SIGKILL
        stats["injections"] += len(hits)
        stats["survived"] += len(hits) * int(documented and not torn and not orphans)
        stats["undocumented_exit"] += int(not documented)
        stats["torn"] += len(torn)
        stats["orphans"] += len(orphans)
        last = (err or "").strip().splitlines()[-1:] or [""]
        events += [{"fault": f, "exit": code, "torn": torn, "orphans": len(orphans)} for f in hits]
        print(
            f"  trial {index} run {attempt}: {'+'.join(hits) or 'resume'} -> exit {code}  {last[0][:100]}", flush=True
        )
        if run_dir is not None:
            command = ["run", "--resume", str(run_dir), "--reports-dir", str(reports)]
        if code == 0:  # finished: later faults would hit a complete run
            break
    import pandas as pd

    results = pd.read_parquet(run_dir / "results.parquet") if run_dir else pd.DataFrame()
    keys = list(zip(results.get("cell_id", []), results.get("repeat", []), strict=True))
    stats["lost"] += planned - len(set(keys))
    stats["duplicated"] += len(keys) - len(set(keys))
    return {"stats": stats, "events": events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--injections", type=int, default=3, help="faults injected per trial")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # the tmpfs mount point, in the namespace
    args = parser.parse_args()

    if args.inside is None and shutil.which("unshare"):
        mnt = Path(tempfile.mkdtemp(prefix="bench-chaos-mnt-"))
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
        if probe.returncode == 0:  # again, in a private mount namespace with a small tmpfs
            argv = [sys.executable, __file__, *sys.argv[1:], "--inside", str(mnt)]
            sys.exit(subprocess.call(["unshare", "-rm", *argv]))
        print("no private mount namespace here: the disk-full fault is left out", flush=True)
    mnt = None
    if args.inside:
        mnt = Path(args.inside)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mnt)], check=True)
    base = mnt or Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    batches = ", ".join(str(b) for b in range(1, args.cells + 1))
    (base / "chaos.yaml").write_text(SCENARIO.format(batches=f"[{batches}]"))
    rng = random.Random(args.seed)
    totals: Counter[str] = Counter()
    by_fault: Counter[str] = Counter()
    started = time.monotonic()
    for index in range(args.trials):
        outcome = trial(index, args, base, mnt, rng)
        totals.update(outcome["stats"])
        by_fault.update(e["fault"] for e in outcome["events"])
        for folder in (base / f"t{index}", base / f"reports{index}"):
            shutil.rmtree(folder, ignore_errors=True)  # room on the tmpfs for the next trial
    print()
    print(f"{args.trials} trials of {args.cells} cells, {time.monotonic() - started:.0f} s; disk-full fault "
          f"{'on a ' + str(TMPFS_MB) + ' MiB tmpfs' if mnt else 'left out'}")  # fmt: skip
    print("injections by fault: " + ", ".join(f"{k} {v}" for k, v in sorted(by_fault.items())))
    for key in ("injections", "survived", "lost", "duplicated", "undocumented_exit", "torn", "orphans", "hung"):
        print(f"  {key:<18} {totals[key]}")
    ok = totals["survived"] == totals["injections"] and not any(
        totals[k] for k in ("lost", "duplicated", "undocumented_exit", "torn", "orphans", "hung")
    )
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
