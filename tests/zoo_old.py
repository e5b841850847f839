"""Tiny random-weight models of the older image-text families and of the non-text ones transformers maps as
image-text-to-text (Kosmos-2, GIT, BLIP, InstructBLIP; Evolla, PI0, ...), built like tests/zoo.py.

`build(family)` returns `(model, processor)` of a zoo family; `LEFT` says why each other family is not in the zoo.
`DROP_IN` builds `(model, dataset)` of the families the VD loss cannot apply to but vanilla `Trainer` trains: they
must train through `VDTrainer` exactly as through `Trainer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo import IMAGE, PATCH, _seeded, llama, siglip, tokenizer


def _bert_like(tok: Any, hidden: int = 64, **extra: Any) -> dict[str, Any]:
    """A two-layer BERT-style text decoder config over `tok`'s vocabulary (BLIP's, GIT's)."""
    return {
        "vocab_size": len(tok),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else 0,
        **extra,
    }


def _vision(hidden: int = 32, **extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE,
        "patch_size": PATCH,
        **extra,
    }


def _qformer(tok: Any) -> dict[str, Any]:
    """A two-layer Q-Former config reading `tok`'s vocabulary and cross-attending to a 32-wide vision tower."""
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "encoder_hidden_size": 32,
        "vocab_size": len(tok),
        "pad_token_id": 0,
    }


def blip() -> tuple[Any, Any]:
    """BLIP captioning: a BERT-style decoder cross-attending to every row's image; no image token in the text."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    tok = tokenizer("llama2")  # BLIP's BERT tokenizer has no npm twin; BOS opens a caption as its [DEC] token does
    image_processor = BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tok)
    config = BlipConfig(
        text_config=_bert_like(tok, encoder_hidden_size=32, sep_token_id=tok.eos_token_id),
        vision_config=_vision(initializer_range=0.02),  # the default 1e-10 makes every image look the same
    )
    return _seeded(BlipForConditionalGeneration, config), processor


def git() -> tuple[Any, Any]:
    """GIT: the image's patch embeddings put in front of the text inside the model (its logits cover them too)."""
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    tok = tokenizer("llama2")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    processor = GitProcessor(image_processor=image_processor, tokenizer=tok)
    config = GitConfig(vision_config=_vision(), **_bert_like(tok))
    return _seeded(GitForCausalLM, config), processor


def instructblip() -> tuple[Any, Any]:
    """InstructBLIP (Vicuna): BLIP-2's query tokens in front of the text, the Q-Former also reading a text with a
    tokenizer of its own; no chat template. The adapter (vdtrain/models/instructblip.py) gives the Q-Former each
    sample's instruction, as the processor does at inference (test_zoo_old.py checks the collated rows)."""
    from transformers import (
        BlipImageProcessorPil,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    tok = tokenizer("llama2")  # the processor adds its `<image>` token
    qformer_tok = tokenizer("llama2")  # InstructBLIP's Q-Former tokenizer is BERT's (no npm twin), which pads
    qformer_tok.pad_token = qformer_tok.unk_token
    image_processor = BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE})
    processor = InstructBlipProcessor(
        image_processor=image_processor, tokenizer=tok, qformer_tokenizer=qformer_tok, num_query_tokens=4
    )
    config = InstructBlipConfig(
        vision_config=_vision(initializer_range=0.02),
        qformer_config=_qformer(qformer_tok),
        text_config=llama(tok),
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    return _seeded(InstructBlipForConditionalGeneration, config), processor


def instructblipvideo() -> tuple[Any, Any]:
    """InstructBLIP-Video (Vicuna): InstructBLIP over a 4-frame clip, `num_query_tokens` video tokens per frame in
    front of the text; its processor has a video processor (torchvision-only), no image processor and no chat
    template. vdtrain gives each image as a static clip (the adapter: vdtrain/models/instructblip.py)."""
    from transformers import (
        InstructBlipVideoConfig,
        InstructBlipVideoForConditionalGeneration,
        InstructBlipVideoProcessor,
    )
    from transformers.models.instructblipvideo.video_processing_instructblipvideo import (
        InstructBlipVideoVideoProcessor,
    )

    tok = tokenizer("llama2")  # the processor adds its `<video>` token
    qformer_tok = tokenizer("llama2")  # BERT's in the published checkpoint (no npm twin)
    qformer_tok.pad_token = qformer_tok.unk_token
    video_processor = InstructBlipVideoVideoProcessor(size={"height": IMAGE, "width": IMAGE})
    processor = InstructBlipVideoProcessor(
        video_processor=video_processor, tokenizer=tok, qformer_tokenizer=qformer_tok, num_query_tokens=2
    )
    config = InstructBlipVideoConfig(
        vision_config=_vision(initializer_range=0.02),
        qformer_config=_qformer(qformer_tok),
        text_config=llama(tok),
        num_query_tokens=2,
        video_token_index=tok.convert_tokens_to_ids("<video>"),
    )
    return _seeded(InstructBlipVideoForConditionalGeneration, config), processor


def kosmos_2() -> tuple[Any, Any]:
    """Kosmos-2: the image after BOS as `<image>` + 64 latent ids + `</image>`, placed by image_embeds_position_mask;
    no chat template. The latent ids are `unk_token_id + 1` on (ordinary XLM-R pieces in the published tokenizer; here
    Llama-2's BOS, EOS and byte tokens): the model overwrites their embeddings with the image's latents."""
    from transformers import CLIPImageProcessorPil, Kosmos2Config, Kosmos2ForConditionalGeneration, Kosmos2Processor

    tok = tokenizer("llama2")  # the processor adds its tag and 1024 patch-index tokens
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    processor = Kosmos2Processor(image_processor=image_processor, tokenizer=tok)
    config = Kosmos2Config(
        text_config={
            "vocab_size": len(tok),
            "embed_dim": 64,
            "layers": 2,
            "ffn_dim": 128,
            "attention_heads": 4,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.unk_token_id,  # the default 1 would be Llama-2's BOS (a zero, frozen embedding)
        },
        vision_config=_vision(),
        latent_query_num=64,  # the processor's num_image_tokens
    )
    return _seeded(Kosmos2ForConditionalGeneration, config), processor


def kosmos_2_5() -> tuple[Any, Any]:
    """Kosmos-2.5: BOS, `<image>`, one BOS copy per latent query and `</image>` in front of the text, placed by
    image_embeds_position_mask; pixels as `flattened_patches` (row, column, 8x8x3 values per patch), at most 16
    patches (the processor's own images_kwargs default is 4096: set as its attribute, the call's defaults; no saved
    file keeps it, so the processor `from_pretrained` gives makes 4096, as the published checkpoint does); no chat
    template. Its processor refuses text without images, so the zoo data are the image rows."""
    from transformers import (
        Kosmos2_5Config,
        Kosmos2_5ForConditionalGeneration,
        Kosmos2_5ImageProcessorPil,
        Kosmos2_5Processor,
    )

    # the published tokenizer names its image tokens in its files (`boi_token`, `eoi_token`, `image_token`: BOS)
    tok = tokenizer(
        "llama2", ("<image>", "</image>"), {"boi_token": "<image>", "eoi_token": "</image>", "image_token": "<s>"}
    )
    tok.add_bos_token = False  # the processor writes BOS itself (the published tokenizer adds none)
    tok.pad_token = tok.unk_token
    image_processor = Kosmos2_5ImageProcessorPil(patch_size={"height": PATCH, "width": PATCH})
    processor = Kosmos2_5Processor(image_processor=image_processor, tokenizer=tok, num_image_tokens=4)
    processor.images_kwargs = {"max_patches": 16}
    config = Kosmos2_5Config(
        text_config={
            "vocab_size": len(tok),
            "embed_dim": 64,
            "layers": 2,
            "ffn_dim": 128,
            "attention_heads": 4,
            "max_position_embeddings": 512,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.unk_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "patch_embed_hidden_size": 3 * PATCH * PATCH,
            "intermediate_size": 64,
            "head_dim": 16,
            "num_hidden_layers": 1,  # one layer: a reloaded processor's 4096 patches make attention the cost
            "num_attention_heads": 2,
            "max_num_patches": 4096,  # row/column embeddings: a reloaded processor asks for 4096 patches (see above)
        },
        latent_query_num=4,  # the processor's num_image_tokens
    )
    return _seeded(Kosmos2_5ForConditionalGeneration, config), processor


# IDEFICS-instruct's: `User:` / `Assistant:` turns each closed by `<end_of_utterance>` and a newline, the image as
# `<fake_token_around_image><image><fake_token_around_image>` (the processor's own image text)
IDEFICS_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<fake_token_around_image><image><fake_token_around_image>"
    "{% elif part['type'] == 'text' %}{{ ' ' + part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def idefics() -> tuple[Any, Any]:
    """IDEFICS (Flamingo-style): gated cross-attention from every text layer to the images a token has seen
    (`image_attention_mask`, per token and image), pixels batched per row with zero images for text-only rows.
    Built with additional_vocab_size=0 (the published 2 extra ids break its own loss:
    `logits.view(-1, config.vocab_size)` in ForCausalLMLoss sees vocab_size + 2 columns)."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsImageProcessorPil, IdeficsProcessor

    tok = tokenizer("llama2", ("<fake_token_around_image>", "<image>", "<end_of_utterance>"))
    image_processor = IdeficsImageProcessorPil(image_size=IMAGE)
    processor = IdeficsProcessor(image_processor=image_processor, tokenizer=tok, image_size=IMAGE)
    processor.chat_template = IDEFICS_TEMPLATE  # its __init__ takes no chat_template
    config = IdeficsConfig(
        vocab_size=len(tok),
        additional_vocab_size=0,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        cross_layer_interval=1,
        alpha_initializer="ones",  # the default zeros gate the images out (tanh 0)
        freeze_text_layers=False,
        freeze_vision_layers=False,
        pad_token_id=tok.unk_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        vision_config={
            "embed_dim": 32,
            "image_size": IMAGE,
            "patch_size": PATCH,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        perceiver_config={"use_resampler": False},
    )
    return _seeded(IdeficsForVisionText2Text, config), processor


BUILDERS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "idefics": idefics,
    "blip": blip,
    "git": git,
    "instructblip": instructblip,
    "instructblipvideo": instructblipvideo,
    "kosmos_2": kosmos_2,
    "kosmos_2_5": kosmos_2_5,
}
FAMILIES = list(BUILDERS)

# families whose forward needs one image per row (cross-attention to it, or it prefixed inside the model): a batch
# with a text-only row fails in the model itself, so their zoo data are the image rows
IMAGE_EVERY_ROW = ("blip", "git")
# families whose processor needs torchvision (tests marked `torchvision`, run by scripts/ci_torchvision.sh)
TORCHVISION = ("instructblipvideo",)
# families whose processor refuses a text-only row ("Kosmos2_5Processor requires images to be passed")
IMAGES_ONLY = ("kosmos_2_5",)
# families whose processor batches pixels one entry per row, text-only rows as zero images: check_family compares
# the collator's pixels with the processor's batch of the image rows alone, so their zoo data are the image rows and
# test_zoo_old.py checks a batch with a text-only row against the processor's own batch of it
ROW_BATCHED = ("idefics",)

LEFT: dict[str, str] = {
    "evolla": "a protein-text model: EvollaForProteinText2Text.forward takes protein_input_ids, no image input, so"
    " d = 0 everywhere; VDTrainer trains it as Trainer with one warning (test_zoo_old.py, DROP_IN)",
    "pi0": "a robot-action model: PI0ForConditionalGeneration's loss is the MSE of flow-matching action velocities"
    " (`actions`), no token labels and no LM head; VDTrainer trains it as Trainer with one warning (DROP_IN)",
    "pi05": "a robot-action model: PI05ForConditionalGeneration's loss is the MSE of flow-matching action velocities"
    " (`actions`), no token labels and no LM head; VDTrainer trains it as Trainer with one warning (DROP_IN)",
    "diffusion_gemma": "a block-diffusion denoiser: DiffusionGemmaForBlockDiffusion.forward takes no labels and"
    " returns no loss (canvas logits only): vanilla Trainer raises 'The model did not return a loss from the inputs'"
    " (test_zoo_old.py)",
}

# ------------------------------------------------------------------ families the VD loss does not apply to
DROP_IN_VOCAB = 64
DROP_IN_IMAGE_TOKENS = (IMAGE // PATCH) ** 2


def _gemma(hidden: int = 64) -> dict[str, Any]:
    return {
        "model_type": "gemma",
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": DROP_IN_VOCAB,
    }


def _pi(kind: str) -> Any:
    """PI0 / PI0.5: a PaliGemma prefix (one camera) and a Gemma action expert denoising a 4-step action chunk."""
    if kind == "pi0":
        from transformers import PI0Config as Config
        from transformers import PI0ForConditionalGeneration as Model

        extra = {"max_state_dim": 8}
    else:
        from transformers import PI05Config as Config
        from transformers import PI05ForConditionalGeneration as Model

        extra = {}
    vlm = {
        "model_type": "paligemma",
        "text_config": _gemma(),
        "vision_config": siglip(),
        "projection_dim": 64,
        "image_token_id": DROP_IN_VOCAB - 1,
        "vocab_size": DROP_IN_VOCAB,
    }
    return _seeded(Model, Config(vlm_config=vlm, dit_config=_gemma(32), chunk_size=4, max_action_dim=8, **extra))


def _pi_rows(kind: str, count: int = 8) -> Any:
    """Rows of PI0's training inputs: image tokens + a prompt, one camera's pixels, the robot state, the actions."""
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(count):
        ids = [DROP_IN_VOCAB - 1] * DROP_IN_IMAGE_TOKENS + torch.randint(2, 50, (6,), generator=generator).tolist()
        row = {
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "pixel_values": torch.randn(1, 3, IMAGE, IMAGE, generator=generator).tolist(),
            "pixel_attention_mask": [True],
            "actions": torch.randn(4, 8, generator=generator).tolist(),
        }
        if kind == "pi0":
            row["state"] = torch.randn(8, generator=generator).tolist()
        rows.append(row)
    return Dataset.from_list(rows).with_format("torch")


def _evolla() -> tuple[Any, Any]:
    """Evolla: a SaProt protein encoder resampled into a Llama's cross-attention; token labels, no image."""
    import torch
    from datasets import Dataset
    from transformers import EvollaConfig, EvollaForProteinText2Text

    config = EvollaConfig(
        protein_encoder_config={
            "vocab_size": 40,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        },
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        aligner_num_add_layers=1,
        resampler_depth=1,
        resampler_dim_head=16,
        resampler_heads=2,
        resampler_num_latents=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(8):
        ids = torch.randint(3, 128, (10,), generator=generator).tolist()
        rows.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [-100] * 4 + ids[4:],  # a prompt of 4 unsupervised tokens
                "protein_input_ids": torch.randint(4, 30, (12,), generator=generator).tolist(),
                "protein_attention_mask": [1] * 12,
            }
        )
    return _seeded(EvollaForProteinText2Text, config), Dataset.from_list(rows).with_format("torch")


def diffusion_gemma() -> Any:
    """A two-layer DiffusionGemma (two experts, text only) and token rows for it."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    text = {
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "sliding_window": 16,
        "layer_types": ["sliding_attention", "full_attention"],
        "num_experts": 2,
        "top_k_experts": 1,
        "moe_intermediate_size": 32,
    }
    config = DiffusionGemmaConfig(
        text_config=text, boi_token_id=297, eoi_token_id=298, image_token_id=299, canvas_length=8
    )
    return _seeded(DiffusionGemmaForBlockDiffusion, config)


DROP_IN: dict[str, Callable[[], tuple[Any, Any]]] = {
    "evolla": _evolla,
    "pi0": lambda: (_pi("pi0"), _pi_rows("pi0")),
    "pi05": lambda: (_pi("pi05"), _pi_rows("pi05")),
}


def build(family: str) -> tuple[Any, Any]:
    """`(model, processor)` of a tiny model of `family` (random weights, seed 0)."""
    return BUILDERS[family]()
