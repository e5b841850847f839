"""One-command GPU check of vdtrain at LLaVA-1.5-7B shapes (random weights, synthetic data, nothing downloaded).

    python scripts/gpu_check.py                # one H100/H200: about 5 min; writes gpu_check.json + gpu_check.md
    python scripts/gpu_check.py --tiny         # the same code paths on CPU at toy sizes (tests/test_gpu_check.py)
    python scripts/gpu_check.py --dry          # parameter count of the 7B model, built on the meta device

Parts, each guarded (a failing part records its error and the others still run):
  step      LoRA r128 on the language model, projector trained, activation checkpointing, batch 8 x 1024 tokens
            (576 image tokens, 350 supervised): step time and peak memory of the vanilla step (HF's loss), vdtrain's
            masked-logits loss before vd_start, the active VD step
            and the vanilla step plus one no-grad forward (the method's limit, docs/method.md section 9), with ratios.
  zero2/3   `VDTrainer.train()` under DeepSpeed ZeRO-2 / ZeRO-3 (recipes/deepspeed/*.json) on one GPU, the noisy
            pass active from step 0; checks the saved adapter is non-empty and trained. Each in a fresh process.
  filter    `score_batch` and `score_dataset` (the `vdtrain filter score` path) against two bare no-grad forwards.
  generate  `generate_answers` at batch 16 (left padding, KV cache) against one question at a time.
The model is built directly on the device in bf16 (`torch.device` context), never first on the CPU. The parts
themselves are in `gpu_check_parts.py`; this file runs them, guards them and writes the report.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_check_parts.py, bench_overhead.py

from gpu_check_parts import (  # noqa: E402
    FULL,
    LLAVA_7B_PARAMS,
    PARTS,
    REPO,
    TINY,
    Shape,
    build_config,
    build_model,
    build_processor,
    part_filter,
    part_generate,
    part_step,
    part_zero,
    tiny_tokenizer,
    train_batch,
)

__all__ = ["FULL", "LLAVA_7B_PARAMS", "TINY", "build_config", "build_model", "build_processor", "train_batch"]


# ---------------------------------------------------------------------------------------------- driver
def guarded(fn, *args) -> dict:
    """`{"status": "ok", "seconds", **fn(*args)}`, or the error and the traceback's tail if `fn` raises."""
    start = time.perf_counter()
    try:
        result = {"status": "ok", **fn(*args)}
    except Exception as error:  # noqa: BLE001  (one broken part must not hide the others' numbers)
        result = {
            "status": "error",
            "error": f"{type(error).__name__}: {error}"[:2000],
            "traceback": traceback.format_exc()[-4000:],
        }
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["seconds"] = time.perf_counter() - start
    return result


def zero_subprocess(stage: int, tiny: bool, work: Path, timeout: int) -> dict:
    """Run `part_zero` in a fresh process (DeepSpeed's global state and a hang stay there); its result JSON back."""
    result_path = work / f"zero{stage}.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, __file__, "--zero-stage", str(stage), "--work", str(work), *(["--tiny"] * tiny)]
    try:
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise TimeoutError(f"ZeRO-{stage} run did not finish in {timeout} s: {str(error.stderr)[-2000:]}") from None
    if not result_path.exists():
        raise RuntimeError(f"ZeRO-{stage} process exited {run.returncode}: {(run.stdout + run.stderr)[-3000:]}")
    result = json.loads(result_path.read_text())
    if result.get("status") == "error":
        raise RuntimeError(result["error"])
    return {k: v for k, v in result.items() if k not in ("status", "seconds")}


def markdown(report: dict) -> str:
    """The Markdown table of a report."""
    parts = report["parts"]
    lines = [
        f"vdtrain gpu_check ({report['mode']}) on {report['device']}, torch {report['versions']['torch']}, "
        f"{report['total_s']:.0f} s",
        "",
        "| part | status | result |",
        "| --- | --- | --- |",
    ]
    for name in PARTS:
        part = parts.get(name)
        if part is None:
            continue
        if part["status"] != "ok":
            lines.append(f"| {name} | **error** | {part['error'].splitlines()[0][:300]} |")
            continue
        try:
            text = _row(name, part)
        except (KeyError, TypeError, ValueError) as error:  # a report from another version: show what is there
            text = f"(cannot render: {error!r}) " + json.dumps({k: v for k, v in part.items() if k != "traceback"})
        lines.append(f"| {name} | ok ({part['seconds']:.0f} s) | {text} |")
    return "\n".join(lines) + "\n"


def num(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, or n/a for a ratio that could not be taken."""
    return "n/a" if value is None else format(value, spec)


def _row(name: str, part: dict) -> str:
    """The result cell of one part."""
    if name == "step":
        s, m, total = part["step_s"], part["peak_mib"], part["peak_total_mib"]["vd_active"]
        return (
            f"vanilla {s['vanilla']:.3f} s / +{m['vanilla']:.0f} MiB; VD active {s['vd_active']:.3f} s / "
            f"+{m['vd_active']:.0f} MiB; vanilla + 1 forward {s['vanilla_plus_forward']:.3f} s / "
            f"+{m['vanilla_plus_forward']:.0f} MiB. VD/vanilla time **{num(part['vd_vs_vanilla_time'], '.2f')}**, "
            f"VD/limit **{num(part['vd_vs_limit_time'], '.2f')}**, VD/vanilla memory "
            f"**{num(part['vd_vs_vanilla_memory'], '.2f')}** (VD peak {total:.0f} MiB in all); vdtrain's masked "
            f"vanilla loss +{m['vanilla_masked']:.0f} MiB ({num(part['masked_vs_vanilla_memory'], '.2f')} of vanilla)"
        )
    if name.startswith("zero"):
        return (
            f"{part['steps']} steps, {part['step_s']:.3f} s/step, peak {part['peak_total_mib']:.0f} MiB, "
            f"VD active on {part['vd_active_steps']} logged steps, adapter {part['adapter_tensors']} "
            f"tensors / {part['adapter_mib']:.0f} MiB, empty {part['adapter_empty_tensors']}, "
            f"projector {part['projector_saved']}, LoRA B trained {part['lora_b_trained']}"
        )
    sps = part["samples_per_s"]
    if name == "filter":
        return (
            f"limit {sps['limit']:.2f} samples/s; score_batch **{num(part['score_batch_vs_limit'], '.2f')}** of it, "
            f"score_dataset **{num(part['score_dataset_vs_limit'], '.2f')}** ({part['tokens_per_sample']:.0f} "
            f"tokens/sample, batch {part['batch_size']})"
        )
    return (
        f"batch {part['batch_size']}: {sps['batched']:.2f} samples/s, one by one {sps['one_by_one']:.2f}: "
        f"**x{num(part['speedup'], '.1f')}** ({part['max_new_tokens']} new tokens; same answers "
        f"{part['same_answers_as_one_by_one']:.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU, float32 (what the tests run)")
    parser.add_argument("--dry", action="store_true", help="only count the full model's parameters on meta")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--output", default="gpu_check.json", help="JSON report; the Markdown table goes beside it")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds the whole check may take (default: 460 full, none --tiny); the ZeRO processes "
        "are stopped when it runs out and recorded as errors",
    )
    parser.add_argument("--zero-stage", type=int, help=argparse.SUPPRESS)  # internal: one ZeRO run in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = TINY if args.tiny else FULL
    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.bfloat16
    if args.dry:
        model = build_model(build_config(FULL, tiny_tokenizer()), "meta", torch.bfloat16)
        count = sum(p.numel() for p in model.parameters())
        print(f"LLaVA-1.5-7B-shaped model: {count:,} parameters (llava-hf/llava-1.5-7b-hf: {LLAVA_7B_PARAMS:,})")
        return
    if args.zero_stage is not None:
        work = Path(args.work)
        result = guarded(part_zero, args.zero_stage, shape, device, dtype, work)
        (work / f"zero{args.zero_stage}.json").write_text(json.dumps(result, indent=1))
        return
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run with --tiny on a CPU machine")
    import peft
    import transformers

    wanted = [name for name in args.parts.split(",") if name]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        raise SystemExit(f"gpu_check: unknown part(s) {unknown}; choose from {PARTS}")
    started = time.perf_counter()
    budget = args.budget if args.budget is not None else (float("inf") if args.tiny else 460.0)
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }
    device_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    report: dict[str, Any] = {
        "mode": "tiny" if args.tiny else "full",
        "device": device_name,
        "versions": versions,
        "shape": asdict(shape),
        "parts": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        in_process = [name for name in ("filter", "generate", "step") if name in wanted]  # step wraps LoRA: last
        model_info = guarded(lambda: _build(shape, device, dtype)) if in_process else {"status": "not built"}
        report["model"] = {k: v for k, v in model_info.items() if k not in ("model", "processor")}
        model, processor = model_info.get("model"), model_info.get("processor")
        for name in in_process:
            fn = {"filter": part_filter, "generate": part_generate, "step": part_step}[name]
            if model is None:
                report["parts"][name] = {"status": "error", "error": "model build failed", "seconds": 0.0}
                continue
            report["parts"][name] = guarded(fn, shape, model, processor, device, work)
            print(f"gpu_check: {name}: {report['parts'][name]['status']}", flush=True)
        del model, model_info
        gc.collect()  # the trainers of the step part hold the model in reference cycles
        if device == "cuda":
            torch.cuda.empty_cache()
        for stage in (2, 3):
            if f"zero{stage}" in wanted:
                left = budget - (time.perf_counter() - started)
                timeout = int(max(30, min(shape.zero_timeout, left)))
                report["parts"][f"zero{stage}"] = guarded(zero_subprocess, stage, args.tiny, work, timeout)
                print(f"gpu_check: zero{stage}: {report['parts'][f'zero{stage}']['status']}", flush=True)
    report["total_s"] = time.perf_counter() - started
    output = Path(args.output)
    output.write_text(json.dumps(report, indent=1))
    table = markdown(report)
    output.with_suffix(".md").write_text(table)
    print(table)


def _build(shape: Shape, device: str, dtype: torch.dtype) -> dict:
    processor = build_processor(shape)
    model = build_model(build_config(shape, processor.tokenizer), device, dtype)
    params = sum(p.numel() for p in model.parameters())
    return {"model": model, "processor": processor, "params": params, "dtype": str(dtype).replace("torch.", "")}


if __name__ == "__main__":
    main()
