"""Assemble the stage-1 (pre-trained, not instruction-tuned) LLaVA-1.5 / Bunny-v1.1 bases of Table 5.1 into models/.

Download the parts first (this script never downloads), e.g. `hf download REPO --local-dir parts/NAME`:

    python scripts/assemble_pretrained.py llava --language-model parts/vicuna-7b-v1.5 \
        --vision-tower parts/clip-vit-large-patch14-336 \
        --projector parts/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5/mm_projector.bin \
        --output models/llava-v1.5-7b-pretrain-hf
    python scripts/assemble_pretrained.py bunny --language-model parts/Meta-Llama-3-8B \
        --vision-tower parts/siglip-so400m-patch14-384 --projector parts/bunny-pretrain/mm_projector.bin \
        --output models/bunny-v1.1-llama-3-8b-v-pretrain

See `vdtrain/models/assemble.py` for what each output holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vdtrain.models.assemble import AssemblyError, assemble_bunny, assemble_llava


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line: `llava|bunny --language-model DIR --vision-tower DIR --projector FILE --output DIR`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=["llava", "bunny"], help="LLaVA-1.5 (llava-hf layout) or Bunny-v1.1 (port)")
    parser.add_argument("--language-model", required=True, type=Path, help="Vicuna-v1.5 / Meta-Llama-3-8B folder")
    parser.add_argument("--vision-tower", required=True, type=Path, help="CLIP ViT-L/14-336 / SigLIP-so400m folder")
    parser.add_argument("--projector", required=True, type=Path, help="the stage-1 mm_projector.bin")
    parser.add_argument("--output", required=True, type=Path, help="folder to write (models/...)")
    parser.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32"],
        default=None,
        help="weights' dtype (default: the language model's own, float16 for Vicuna, bfloat16 for Llama-3)",
    )
    parser.add_argument("--s2-scales", type=int, nargs="+", default=None, help="Bunny only (default 384 768 1152)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Assemble, then list what was written."""
    args = parse_args(argv)
    common = {"dtype": args.dtype, "overwrite": args.overwrite}
    parts = (args.language_model, args.vision_tower, args.projector, args.output)
    try:
        if args.family == "llava":
            if args.s2_scales:
                raise AssemblyError("--s2-scales applies to bunny only.")
            output = assemble_llava(*parts, **common)
        else:
            output = assemble_bunny(*parts, s2_scales=args.s2_scales, **common)
    except AssemblyError as error:
        print(f"assemble_pretrained: {error}", file=sys.stderr)
        return 1
    files = sorted(p for p in output.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {output} ({total / 2**30:.2f} GiB):")
    for path in files:
        print(f"  {path.name:40s} {path.stat().st_size / 2**20:10.1f} MiB")
    print(f"load it with vdtrain.models.loading.load_model_and_processor({str(output)!r})")
    print(f"or train it with --model_name_or_path {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
