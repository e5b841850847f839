"""Every zoo family through the user's two commands, outside CI (about 3 s a family): `vdtrain train` from a saved
checkpoint (`save_pretrained` of the tiny model and processor, AutoModel/AutoProcessor reload, LoRA r 4, 2 steps with
the noisy pass from step 0) and batched greedy generation (`generate_batch`, each answer compared with the one its
prompt gets alone). The zoo tests drive in-memory objects through the data path and the trainer; this finds what a
saved folder, PEFT or `generate` change.

    PYTHONPATH=tests python scripts/zoo_survey.py --out survey.json                # the main venv's families
    PYTHONPATH=tests $TV/bin/python scripts/zoo_survey.py --torchvision --out tv.json  # those that need torchvision

Results go to `--out` (JSON, one entry per family; a rerun skips the families already there) and a summary is
printed; the exit status is 1 when a family failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

MODULES = ("zoo", "zoo_qwen", "zoo_glm", "zoo_ocr", "zoo_classic", "zoo_old", "zoo_encdec")
TORCHVISION_MODULES = ("zoo_torchvision", "zoo_tva", "zoo_tvb")
# families whose in-memory zoo test runs in the main venv but whose saved processor reloads classes that need
# torchvision (AutoProcessor picks the torchvision image or video processor) or timm (Gemma-3n's tower)
RELOAD_NEEDS_TORCHVISION = {"mistral_large4", "minicpmv4_6", "minicpmv4_7", "gemma3n"}
QUESTIONS = ["what color is it?", "describe the picture in a few words please."]


def families(torchvision: bool) -> list[tuple[Any, str]]:
    """`(module, family)` of every zoo family the environment runs: those needing torchvision, or the others."""
    picked = []
    for name in (*MODULES, *TORCHVISION_MODULES):
        module = importlib.import_module(name)
        marked = set(getattr(module, "TORCHVISION", ()))
        for family in module.FAMILIES:
            needs = name in TORCHVISION_MODULES or family in marked or family in RELOAD_NEEDS_TORCHVISION
            if needs == torchvision:
                picked.append((module, family))
    return picked


def train(module: Any, family: str, folder: Path) -> dict[str, Any]:
    """`vdtrain train` on the family's tiny checkpoint saved to `folder`: exit status and LoRA tensors saved."""
    import tiny
    import torch
    from safetensors.torch import load_file

    from vdtrain.cli import main

    model, processor = module.build(family)
    bfloat16 = next(model.parameters()).dtype == torch.bfloat16  # Llama-4: its processor writes bfloat16 pixels
    recipe = tiny.write_training_run(folder, model, processor, "dtype: bfloat16\n" if bfloat16 else "")
    status = main(["train", str(recipe)])
    lora = 0
    if status == 0:
        lora = sum("lora_A" in key for key in load_file(folder / "out" / "adapter_model.safetensors"))
    return {"train": status == 0 and lora > 0, "lora_tensors": lora}


def generate(module: Any, family: str) -> dict[str, Any]:
    """Batched greedy answers to two prompts, and whether each equals its prompt's answer alone."""
    from PIL import Image

    from vdtrain.evaluation.decoding import DecodingOptions
    from vdtrain.evaluation.generate import generate_batch
    from vdtrain.models import get_adapter

    model, processor = module.build(family)
    model.eval()
    adapter = get_adapter(model, processor)
    images = [Image.new("RGB", (48, 32), "red"), Image.new("RGB", (32, 56), "blue")]
    options = DecodingOptions(max_new_tokens=3)
    together = generate_batch(model, processor, adapter, QUESTIONS, images, options)
    alone = [generate_batch(model, processor, adapter, [q], [i], options)[0] for q, i in zip(QUESTIONS, images)]
    return {"generate": True, "batch_independent": together == alone, "answers": together}


def survey(module: Any, family: str) -> dict[str, Any]:
    """Both checks on one family, each failure kept as its last line."""
    result: dict[str, Any] = {}
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        checks = {"train": lambda: train(module, family, Path(tmp)), "generate": lambda: generate(module, family)}
        for name, check in checks.items():
            try:
                result.update(check())
            except Exception as error:  # noqa: BLE001 (a survey: every family's failure is a result)
                result[name] = False
                result[f"{name}_error"] = traceback.format_exception_only(error)[-1].strip()[:300]
    result["seconds"] = round(time.time() - start, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON results (resumed when it exists)")
    parser.add_argument("--torchvision", action="store_true", help="the families whose processors need torchvision")
    parser.add_argument("--only", nargs="*", default=None, help="family keys to run (default: all)")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for module, family in families(args.torchvision):
        key = f"{module.__name__}:{family}"
        if key in results or (args.only and family not in args.only and key not in args.only):
            continue
        results[key] = survey(module, family)
        print(key, results[key], flush=True)
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    failed = [key for key, r in results.items() if not (r.get("train") and r.get("generate"))]
    changed = [key for key, r in results.items() if r.get("generate") and not r.get("batch_independent")]
    print(
        f"{len(results)} families: {len(results) - len(failed)} train and generate; failed: {failed or 'none'}; "
        f"answers that depend on the batch: {changed or 'none'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
