"""`vdtrain embed`: embeddings of a dataset for selection, in record order, resumable and sharded."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vdtrain.commands import options

POOLINGS = ("answer-mean", "image-mean", "last-token")  # vdtrain.selection.encoders.POOLINGS (not imported: torch)

DESCRIPTION = """Embed every record of a LLaVA-format dataset for `vdtrain filter select` (coverage strategies) and
`vdtrain select pairs`. Rerunning with the same --output-dir resumes; under `accelerate launch -m vdtrain embed`
each process embeds a share.

  --pooling P      a vision-language model (the scoring model): one no-grad clean pass, its last hidden state
                   pooled over the answer tokens (answer-mean), the image tokens (image-mean) or the last token;
                   writes OUT/embeddings.npy. (`vdtrain filter score --save-embeddings P` gets the same rows as a
                   by-product of scoring.)
  --encoder        a frozen dual encoder (CLIPModel / SiglipModel through AutoModel: OUT/image.npy and OUT/text.npy)
                   or a sentence encoder (OUT/text.npy, mean-pooled; reads long answers, which CLIP's 77-token text
                   tower truncates). The text is the record's assistant turns.

OUT/run.json fingerprints the run (data hash, model, dtype, pooling, projection); rows of records that
cannot be embedded are NaN and listed in OUT/errors.rank*.jsonl.
"""


def build_parser() -> argparse.ArgumentParser:
    """The `vdtrain embed` parser."""
    parser = options.parser("vdtrain embed", DESCRIPTION)
    options.add_model_options(parser, model_help="model directory or hub id (a VLM, a dual encoder or a text encoder)")
    parser.add_argument("--data", required=True, help="LLaVA-format conversation data: a JSON list or JSONL")
    parser.add_argument("--image-folder", default=None, help="folder the records' 'image' paths are relative to")
    parser.add_argument("--output-dir", required=True, help="where the .npy files go; the same directory resumes")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--pooling", choices=POOLINGS, help="pool a vision-language model's last hidden state")
    mode.add_argument("--encoder", action="store_true", help="--model is a dual encoder or a sentence encoder")
    parser.add_argument(
        "--project-dim",
        type=options.positive_int,
        default=None,
        help="seeded random projection of pooled rows to this width (256-1024 keeps distances; default: none)",
    )
    options.add_seed(parser, "the random projection")
    options.add_batch_size(parser, 8)
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per sequence after image expansion")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vdtrain embed`."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"--data {args.data}: no such file")
    from vdtrain.filtering.runs import distributed, end_distributed
    from vdtrain.selection.embed import embedding_info, encoder_dataset, pooled_dataset

    rank, world = distributed()
    model_name = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    if args.encoder:
        import torch

        from vdtrain.selection.encoders import load_encoder

        device = options.resolve_device(args.device)
        dtype = options.resolve_dtype(args.dtype, str(device))
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else torch.float32
        model, processor, dual = load_encoder(options.check_model_path(args.model), dtype=torch_dtype, device=device)
        info = embedding_info(model_name, Path(args.data), dtype, "encoder", None, args.seed)
        written = encoder_dataset(
            model, processor, dual, args.data, args.output_dir, image_folder=args.image_folder,
            batch_size=args.batch_size, info=info, rank=rank, world=world,
        )  # fmt: skip
    else:
        model, processor, _ = options.load_model(args)
        dtype = str(getattr(model, "dtype", "")).replace("torch.", "")
        info = embedding_info(model_name, Path(args.data), dtype, args.pooling, args.project_dim, args.seed)
        written = pooled_dataset(
            model, processor, args.data, args.output_dir, pooling=args.pooling, info=info,
            image_folder=args.image_folder, dim=args.project_dim, seed=args.seed, batch_size=args.batch_size,
            max_length=args.max_length, rank=rank, world=world,
        )  # fmt: skip
    end_distributed()
    if written:
        import numpy as np

        for path in written.values():
            array = np.load(path, mmap_mode="r")
            missing = int(np.isnan(array[:, 0]).sum()) if len(array) else 0
            print(f"vdtrain embed: {path} {tuple(array.shape)}" + (f", {missing} rows missing" if missing else ""))
    return 0
