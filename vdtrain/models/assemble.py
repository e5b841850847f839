"""Assemble the stage-1 (projector-only pre-trained) LLaVA-1.5 and Bunny-v1.1 bases from their public parts.

Table 5.1 fine-tunes these bases, which are published only as parts: a language model, a vision tower and the
`mm_projector.bin` of the pre-training (feature-alignment) stage. The functions here read local copies of the parts and
write one `from_pretrained` directory:

- LLaVA-1.5: Vicuna-v1.5 + CLIP ViT-L/14-336 + projector, in the llava-hf layout of `llava-hf/llava-1.5-7b-hf`
  (`<image>` added as id 32000 and `<pad>` as 32001, embeddings mean-resized and padded to 32064, `LlavaProcessor`).
- Bunny-v1.1: Llama-3-8B + SigLIP-so400m-384 (S² at 1x/2x/3x) + projector, as vdtrain's native
  `BunnyForConditionalGeneration` plus the tokenizer (pad == eos); `BunnyAdapter.build_processor` supplies the rest.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vdtrain.errors import InputError

# LLaVA / Bunny save the projector as `model.mm_projector.{i}.{weight,bias}` (mlp2x_gelu: Linear, GELU, Linear).
_PROJECTOR_KEY = re.compile(r"^(?:model\.)?mm_projector\.(\d+)\.(weight|bias)$")
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
LLAVA_IMAGE_TOKEN = "<image>"
LLAVA_PAD_TOKEN = "<pad>"


class AssemblyError(InputError):
    """A part is missing or does not fit the others; the message names the file and what is wrong."""


def _check_dir(path: str | os.PathLike, role: str, files: tuple[str, ...] = ("config.json",)) -> Path:
    """`path` as a Path after checking it holds `files` and some weights."""
    folder = Path(path)
    if not folder.is_dir():
        raise AssemblyError(f"{role}: {folder} is not a directory (download the part first; nothing is fetched).")
    missing = [name for name in files if not (folder / name).is_file()]
    if not any(any(folder.glob(pattern)) for pattern in _WEIGHT_GLOBS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if missing:
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise AssemblyError(f"{role}: {folder} lacks {', '.join(missing)}; it holds {present}.")
    return folder


def load_projector(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The projector state dict of a stage-1 `mm_projector.bin` (or .safetensors), keys `{i}.weight`/`{i}.bias`."""
    file = Path(path)
    if not file.is_file():
        raise AssemblyError(f"projector: {file} does not exist (the pre-training release's mm_projector.bin).")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not state:
        raise AssemblyError(f"projector: {file} holds no state dict.")
    unexpected = [key for key in state if not _PROJECTOR_KEY.match(key)]
    if unexpected:
        raise AssemblyError(
            f"projector: {file} has unexpected keys {unexpected[:8]}; expected only "
            "`model.mm_projector.{i}.weight/bias` (the mm_projector.bin of LLaVA/Bunny pre-training)."
        )
    return {".".join(_PROJECTOR_KEY.match(key).groups()): value for key, value in state.items()}


def _check_projector(state: dict[str, torch.Tensor], file: Any, in_features: int, hidden: int) -> None:
    """Raise unless `state` is an mlp2x_gelu projector from `in_features` to `hidden`."""
    expected = {
        "0.weight": (hidden, in_features),
        "0.bias": (hidden,),
        "2.weight": (hidden, hidden),
        "2.bias": (hidden,),
    }
    if set(state) != set(expected):
        raise AssemblyError(
            f"projector: {file} has layers {sorted(state)}, expected {sorted(expected)} (an mlp2x_gelu projector)."
        )
    wrong = {k: tuple(v.shape) for k, v in state.items() if tuple(v.shape) != expected[k]}
    if wrong:
        raise AssemblyError(
            f"projector: {file} has shapes {wrong}, expected { {k: expected[k] for k in wrong} } for a "
            f"{in_features}-wide vision feature and a {hidden}-wide "
            "language model: is it the projector of these parts (same model size, same vision tower, S² scales)?"
        )


def _resolve_dtype(dtype: str | torch.dtype | None, language_model: Path) -> torch.dtype:
    """`dtype`, or the language model's own (`config.json` `dtype`/`torch_dtype`), else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        from transformers import AutoConfig

        dtype = getattr(AutoConfig.from_pretrained(language_model), "dtype", None) or "float32"
        if isinstance(dtype, torch.dtype):
            return dtype
    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise AssemblyError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}.")
    return getattr(torch, str(dtype))


def _from_pretrained(cls: Any, folder: Path, role: str, dtype: torch.dtype) -> nn.Module:
    """`cls.from_pretrained(folder)`, raising if any of the model's weights were not in the checkpoint."""
    model, info = cls.from_pretrained(folder, dtype=dtype, output_loading_info=True)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise AssemblyError(
            f"{role}: {folder} lacks weights {missing[:8]} ({len(missing)} in all) for {cls.__name__}."
        )
    return model.eval()


def _load_tokenizer(folder: Path) -> Any:
    """The language model's tokenizer, with a clear error when a sentencepiece-only tokenizer cannot be read."""
    from transformers import AutoTokenizer

    if not (folder / "tokenizer.json").is_file():
        if not (folder / "tokenizer.model").is_file():
            raise AssemblyError(f"language model: {folder} has neither tokenizer.json nor tokenizer.model.")
        if importlib.util.find_spec("sentencepiece") is None or importlib.util.find_spec("google.protobuf") is None:
            raise AssemblyError(
                f"language model: {folder} has only a sentencepiece tokenizer.model; reading it needs "
                "`pip install sentencepiece protobuf`."
            )
    return AutoTokenizer.from_pretrained(folder)


def _graft(
    shell: nn.Module, language_model: nn.Module, vision: nn.Module, projector_name: str, projector: dict
) -> None:
    """Put the loaded parts into a model built on the meta device and load the projector; nothing stays on meta."""
    inner = shell.model
    inner.language_model = language_model.get_decoder()
    shell.lm_head = language_model.get_output_embeddings()
    inner.vision_tower = vision
    module = getattr(inner, projector_name).to_empty(device="cpu").to(shell.lm_head.weight.dtype)
    layers = module if isinstance(module, nn.Sequential) else [module.linear_1, None, module.linear_2]
    for index in (0, 2):
        layers[index].weight.data.copy_(projector[f"{index}.weight"])
        layers[index].bias.data.copy_(projector[f"{index}.bias"])
    on_meta = [name for name, t in [*shell.named_parameters(), *shell.named_buffers()] if t.is_meta]
    if on_meta:
        raise AssemblyError(f"internal: tensors {on_meta[:5]} were not filled from the parts.")


def _prepare_output(output: str | os.PathLike, overwrite: bool) -> Path:
    folder = Path(output)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise AssemblyError(f"output: {folder} exists and is not empty; pass overwrite=True (--overwrite) to replace.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assemble_llava(
    language_model: str | os.PathLike,
    vision_tower: str | os.PathLike,
    projector: str | os.PathLike,
    output: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    pad_to_multiple_of: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write LLaVA-1.5 stage 1 (Vicuna-v1.5 + CLIP + `mm_projector.bin`) in the llava-hf layout; returns `output`.

    Args:
        language_model (`str`): a `lmsys/vicuna-{7,13}b-v1.5` download (LlamaForCausalLM + tokenizer).
        vision_tower (`str`): an `openai/clip-vit-large-patch14-336` download (weights + preprocessor_config.json).
        projector (`str`): the stage-1 `mm_projector.bin` (`liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-*`).
        dtype (`str`, *optional*): weights' dtype; defaults to the language model's (float16 for Vicuna).
        pad_to_multiple_of (`int`, defaults to 64): embedding rows, as llava-hf (32002 tokens -> 32064 rows).
        seed (`int`, defaults to 0): seeds the mean-resizing draw of the new embedding rows.
    """
    from transformers import (
        AddedToken,
        AutoModelForCausalLM,
        CLIPImageProcessorPil,
        CLIPVisionModel,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    lm_dir = _check_dir(language_model, "language model")
    vision_dir = _check_dir(vision_tower, "vision tower", ("config.json", "preprocessor_config.json"))
    weights = load_projector(projector)
    folder = _prepare_output(output, overwrite)
    dtype = _resolve_dtype(dtype, lm_dir)

    tokenizer = _load_tokenizer(lm_dir)
    tokenizer.add_tokens([AddedToken(LLAVA_IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": LLAVA_PAD_TOKEN})  # Vicuna's pad is <unk>/none; llava-hf uses <pad>
    image_processor = CLIPImageProcessorPil.from_pretrained(vision_dir)

    vision = _from_pretrained(CLIPVisionModel, vision_dir, "vision tower", dtype)
    lm = _from_pretrained(AutoModelForCausalLM, lm_dir, "language model", dtype)
    text_config, vision_config = lm.config, vision.config
    _check_projector(weights, projector, vision_config.hidden_size, text_config.hidden_size)
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(LLAVA_IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    _graft(model, lm, vision, "multi_modal_projector", weights)
    with torch.random.fork_rng(devices=[]):  # new rows drawn around the old embeddings' mean, as llava-hf did
        torch.manual_seed(seed)
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=True)
    model.config.text_config.pad_token_id = tokenizer.pad_token_id
    text = model.config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(folder)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(folder)
    return folder


def assemble_bunny(
    language_model: str | os.PathLike,
    vision_tower: str | os.PathLike,
    projector: str | os.PathLike,
    output: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    s2_scales: list[int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write Bunny-v1.1 stage 1 (Llama-3-8B + SigLIP + `mm_projector.bin`) as vdtrain's Bunny port; returns `output`.

    Args:
        language_model (`str`): a `meta-llama/Meta-Llama-3-8B` download (LlamaForCausalLM + tokenizer).
        vision_tower (`str`): a `google/siglip-so400m-patch14-384` download.
        projector (`str`): the `mm_projector.bin` of Bunny-v1.1's pre-training stage (mlp2x_gelu, 3 x 1152 -> 4096).
        dtype (`str`, *optional*): weights' dtype; defaults to the language model's (bfloat16 for Llama-3).
        s2_scales (`list[int]`, *optional*): S² sizes; defaults to 1x, 2x and 3x the tower's image size (384/768/1152).
    """
    from transformers import AutoModelForCausalLM, GenerationConfig, SiglipVisionModel

    from vdtrain.models.bunny import LLAMA3_IMAGE_TOKEN_ID, BunnyConfig, BunnyForConditionalGeneration
    from vdtrain.models.bunny.adapter import END_OF_TEXT, IMAGE_TOKEN

    lm_dir = _check_dir(language_model, "language model")
    vision_dir = _check_dir(vision_tower, "vision tower")
    weights = load_projector(projector)
    folder = _prepare_output(output, overwrite)
    dtype = _resolve_dtype(dtype, lm_dir)

    tokenizer = _load_tokenizer(lm_dir)
    found = {token: tokenizer.convert_tokens_to_ids(token) for token in (IMAGE_TOKEN, END_OF_TEXT)}
    if found[IMAGE_TOKEN] != LLAMA3_IMAGE_TOKEN_ID or found[END_OF_TEXT] in (None, tokenizer.unk_token_id):
        raise AssemblyError(
            f"language model: {lm_dir}'s tokenizer maps {found}; Bunny needs the Llama-3 tokenizer "
            f"({IMAGE_TOKEN} = {LLAMA3_IMAGE_TOKEN_ID}, {END_OF_TEXT} present)."
        )
    tokenizer.pad_token = END_OF_TEXT  # Bunny: pad == eos

    vision = _from_pretrained(SiglipVisionModel, vision_dir, "vision tower", dtype)
    lm = _from_pretrained(AutoModelForCausalLM, lm_dir, "language model", dtype)
    text_config, vision_config = lm.config, vision.config
    tile = vision_config.image_size
    scales = sorted(s2_scales) if s2_scales else [tile, 2 * tile, 3 * tile]
    _check_projector(weights, projector, len(scales) * vision_config.hidden_size, text_config.hidden_size)
    text_config.pad_token_id = found[END_OF_TEXT]
    config = BunnyConfig(
        vision_config=vision_config,
        text_config=text_config,
        s2_scales=scales,
        mm_projector_type="mlp2x_gelu",
        image_token_index=LLAMA3_IMAGE_TOKEN_ID,
        vision_feature_layer=-2,
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    with torch.device("meta"):
        model = BunnyForConditionalGeneration(config)
    _graft(model, lm, vision, "mm_projector", weights)
    model.generation_config = GenerationConfig(
        bos_token_id=text_config.bos_token_id, eos_token_id=found[END_OF_TEXT], pad_token_id=found[END_OF_TEXT]
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


__all__ = ["AssemblyError", "assemble_bunny", "assemble_llava", "load_projector"]
