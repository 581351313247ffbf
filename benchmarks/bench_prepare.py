"""First use as a user meets it: wall time and peak memory of preparing a model in a fresh process and home.

Each case runs one ``m3search`` command under ``/usr/bin/time -v`` with a fresh ``M3SEARCH_HOME`` and default
settings otherwise, while a sampler adds up the RSS of the whole process tree every 0.2 s (the two peaks are both
reported; a watchdog stops a case whose tree passes ``--limit-gb``, reported as "stopped"). The torch exporter
(``M3SEARCH_BUILDER=torch``, the path before the torch-free builder) runs in the same run as the baseline.

Cases: BGE-M3 (full-size architecture, random weights, official layout; built once into ``.cache``) first
``embed`` with all three outputs, backend auto; ``models prepare bge-m3`` for single modes; MiniLM's first
``embed``; SPLADE-tiny's first ``index``. Reproduce: ``python benchmarks/bench_prepare.py`` (about 30 minutes on
2 cores; ``--cases`` picks some).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from common import ROOT, machine, versions, write_results

CACHE = ROOT / ".cache" / "bge-m3"
BIN = str(Path(sys.executable).with_name("m3search"))
M3 = ["--model", "bge-m3", "--model-path", str(CACHE / "model")]
CASES: dict[str, list[str]] = {
    "bge-m3 first embed (auto; 3 outputs)": ["embed", *M3, "--sparse", "--colbert", "What is BGE M3?"],
    "bge-m3 prepare onnxruntime/int8-dynamic": ["models", "prepare", *M3[1:], "--backend", "onnxruntime",
                                                "--precision", "int8-dynamic"],
    "bge-m3 prepare openvino/int8-dynamic": ["models", "prepare", *M3[1:], "--backend", "openvino",
                                             "--precision", "int8-dynamic"],
    "bge-m3 prepare openvino/fp32": ["models", "prepare", *M3[1:], "--backend", "openvino", "--precision", "fp32"],
    "bge-m3 prepare openvino/int8-static": ["models", "prepare", *M3[1:], "--backend", "openvino",
                                            "--precision", "int8-static"],
    "bge-m3 prepare onnxruntime/int8-static": ["models", "prepare", *M3[1:], "--backend", "onnxruntime",
                                               "--precision", "int8-static"],
    "minilm first embed": ["embed", "--model", "all-minilm-l6-v2", "A man is playing a guitar."],
    "splade-tiny first index": ["index", str(ROOT / "data" / "debian-faq" / "en" / "corpus.jsonl"), "-c", "faq",
                                "--model", "splade-tiny"],
}
BUILDERS = ("auto", "torch")


def cpu_flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text()
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
    return [f for f in (flags.group(1).split() if flags else []) if f in wanted]


def _sample(pid: int, limit_mb: float, state: dict[str, Any]) -> None:
    """Peak of the summed RSS of ``pid`` and its descendants; kills the tree past ``limit_mb``."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while state["running"]:
        try:
            procs = [root, *root.children(recursive=True)]
            total = sum(p.memory_info().rss for p in procs) / 2**20
        except psutil.NoSuchProcess:
            total = 0.0
            procs = []
        state["tree_peak_mb"] = max(state["tree_peak_mb"], total)
        if total > limit_mb:
            state["stopped"] = True
            for proc in reversed(procs):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            return
        time.sleep(0.2)


def run_case(args: list[str], builder: str, limit_mb: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="m3-first-use-"))
    env = {**os.environ, "M3SEARCH_HOME": str(home), "M3SEARCH_BUILDER": builder, "HF_HUB_OFFLINE": "1"}
    env.pop("M3SEARCH_BACKEND", None)
    start = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", BIN, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state: dict[str, Any] = {"running": True, "tree_peak_mb": 0.0, "stopped": False}
    sampler = threading.Thread(target=_sample, args=(proc.pid, limit_mb, state), daemon=True)
    sampler.start()
    _, err = proc.communicate()
    state["running"] = False
    sampler.join()
    wall = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    disk = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    shutil.rmtree(home, ignore_errors=True)
    result = {"wall_s": round(wall, 1), "time_v_peak_mb": round(int(rss.group(1)) / 1024) if rss else None,
              "tree_peak_mb": round(state["tree_peak_mb"]), "home_mb": round(disk / 2**20),
              "exit": proc.returncode, "stopped": state["stopped"]}
    if proc.returncode != 0 and not state["stopped"]:
        tail = [line for line in err.splitlines() if line and not line.startswith("\t")]
        result["error"] = tail[-1] if tail else ""
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# First use: preparing models in a fresh process and home",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"flags {' '.join(result['cpu_flags'])}; "
        f"onnxruntime {result['versions']['onnxruntime']}, openvino {result['versions']['openvino']}. "
        "Reproduce: `python benchmarks/bench_prepare.py`. Peak RSS: `/usr/bin/time -v` and the summed RSS of the "
        "process tree (sampled every 0.2 s); a case stopped by the watchdog passed the limit.",
        "",
        "| case | builder | wall (s) | peak RSS, time -v (MB) | peak RSS, tree (MB) | disk (MB) | result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case, runs in result["cases"].items():
        for builder, r in runs.items():
            outcome = ("stopped at the limit" if r["stopped"] else "ok" if r["exit"] == 0
                       else f"exit {r['exit']}: {r.get('error', '')[:80]}")
            name = "m3search (torch-free)" if builder == "auto" else "torch exporter (before)"
            lines.append(f"| {case} | {name} | {r['wall_s']} | {r['time_v_peak_mb']} | {r['tree_peak_mb']} | "
                         f"{r['home_mb']} | {outcome} |")
    venv = result.get("venv")
    if venv:
        lines += ["", f"A fresh venv with `pip install '.[openvino]'`: {venv['mb']} MB, torch importable: "
                  f"{venv['torch']}."]
    return "\n".join(lines) + "\n"


def venv_size() -> dict[str, Any]:
    """Size of a fresh virtual environment with m3search[openvino] (from this checkout), and whether torch is in."""
    target = Path(tempfile.mkdtemp(prefix="m3-venv-"))
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"{ROOT.parent}[openvino]"], check=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and not p.is_symlink())
    torch = subprocess.run([str(target / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode == 0
    shutil.rmtree(target, ignore_errors=True)
    return {"mb": round(size / 2**20), "torch": torch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--builders", default=",".join(BUILDERS))
    parser.add_argument("--limit-gb", type=float, default=20.0, help="stop a case whose process tree passes this")
    parser.add_argument("--venv", action="store_true", help="also measure a fresh m3search[openvino] venv")
    parser.add_argument("--keep", type=Path, help="a previous prepare.json whose cases are kept (not run again)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    if not (CACHE / "model" / "model.safetensors").is_file():
        from m3search.testing import FULL_SIZE, build_random_bge_m3

        build_random_bge_m3(CACHE / "model", FULL_SIZE)
    result: dict[str, Any] = {"machine": machine(), "cpu_flags": cpu_flags(),
                              "versions": versions("m3search", "onnxruntime", "openvino", "onnx", "torch"),
                              "cases": {}}
    if args.keep is not None:
        result["cases"] = json.loads(args.keep.read_text())["cases"]
    for case in args.cases.split(","):
        for builder in args.builders.split(","):
            if builder in result["cases"].get(case, {}):
                continue
            print(f"{case} [{builder}] ...", file=sys.stderr, flush=True)
            result["cases"].setdefault(case, {})[builder] = run_case(CASES[case], builder, args.limit_gb * 1024)
            print(json.dumps(result["cases"][case][builder]), file=sys.stderr, flush=True)
    if args.venv:
        result["venv"] = venv_size()
    write_results(args.out, "prepare", result, markdown(result))


if __name__ == "__main__":
    main()
