"""The demo's tiny LLaVA (a byte-level BPE trained on the demo's own text, a CLIP tower on 32-px images, a small
Llama; random weights, built from configs, no downloads) and how it is trained with `VDTrainer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdtrain.io import read_json

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")


@dataclass
class DemoModelConfig:
    """Sizes of the tiny LLaVA (vision tower, projector, language model) and of its tokenizer."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 2
    vocab_size: int = 1024  # BPE target; the demo's words are few, so most become one token
    feature_strategy: str = "full"  # LLaVA's vision_feature_select_strategy: "full" keeps the CLS token

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"CLIP tower {self.vision_layers}x{self.vision_hidden} on {self.image_size}-px images, "
            f"{self.patch_size}-px patches ({(self.image_size // self.patch_size) ** 2} patch tokens"
            f"{' + CLS' if self.feature_strategy == 'full' else ''} per image); "
            f"Llama {self.text_layers}x{self.text_hidden}, {self.text_heads} heads; BPE vocab <= {self.vocab_size}"
        )


def demo_corpus(train_json: str | Path, extra: Iterable[str] = ()) -> list[str]:
    """Every text the model will read or write: the Vicuna frame, the training turns, and `extra` (eval prompts)."""
    from vdtrain.models.llava import VICUNA_SYSTEM  # here, not at the top: `vdtrain demo --help` needs no transformers

    texts = [VICUNA_SYSTEM, "USER: ASSISTANT:"]
    for record in read_json(train_json):
        texts += [turn["value"].replace("<image>", "").strip() for turn in record["conversations"]]
    return texts + list(extra)


def demo_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> Any:
    """A byte-level BPE trained on `corpus`, with Llama-style `<s>`/`</s>`, `<pad>`, `<image>`, and the Vicuna
    system prompt as a single (non-special) token: one token instead of ~28 makes training and decoding ~35% faster."""
    from vdtrain.models.llava import VICUNA_SYSTEM

    return bpe_tokenizer(corpus, vocab_size, SPECIAL_TOKENS, added=(VICUNA_SYSTEM,))


def bpe_tokenizer(
    corpus: Iterable[str], vocab_size: int, special_tokens: Iterable[str], added: Iterable[str] = ()
) -> Any:
    """A Llama-style fast tokenizer (`<s>` prepended; `</s>`, `<pad>`, `<unk>`, `<image>`) over a byte-level BPE
    trained on `corpus`, plus `added` as whole (non-special) tokens. Also builds the test suite's tokenizers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer.add_tokens([AddedToken(text, normalized=False, single_word=False) for text in added])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 $B:1", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )


def demo_processor(tokenizer: Any, config: DemoModelConfig) -> Any:
    """`LlavaProcessor` for the CLIP tower: resize/crop to `image_size`, one `<image>` per patch."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    size = config.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.patch_size,
        vision_feature_select_strategy=config.feature_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS token ("default" drops it again)
    )


def demo_model(processor: Any, config: DemoModelConfig, seed: int = 0) -> Any:
    """A randomly initialised `LlavaForConditionalGeneration` (seeded) matching `processor`."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=config.vision_hidden,
        intermediate_size=2 * config.vision_hidden,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        projection_dim=config.vision_hidden,
    )
    text = LlamaConfig(
        hidden_size=config.text_hidden,
        intermediate_size=3 * config.text_hidden,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        num_key_value_heads=config.text_kv_heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    llava = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(config.image_size // config.patch_size) ** 2 + (config.feature_strategy == "full"),
        vision_feature_select_strategy=config.feature_strategy,
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(llava)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def pretrain_vision_tower(
    model: Any,
    processor: Any,
    image_paths: list[Path],
    labels: list[list[int]],
    *,
    steps: int = 300,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Stand-in for CLIP pre-training: teach the tower's features which objects an image holds.

    Multi-label classification (BCE against the image's object classes) from the features the projector will see
    (`vision_feature_layer`): a linear head scores every patch and the image's score per class is the max over
    patches; with the "full" strategy a second head scores the CLS token. Returns the loss of every step; the heads
    are thrown away.

    Args:
        image_paths (`list[Path]`): training images.
        labels (`list[list[int]]`): the class indices present in each image.
    """
    import torch
    from tqdm.auto import tqdm

    from vdtrain.data.images import load_image

    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    images = []
    for path in image_paths:
        images.append(load_image(path))
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]  # (N, 3, H, W)
    n_classes = 1 + max(c for row in labels for c in row)
    targets = torch.zeros(len(labels), n_classes)
    for row, classes in enumerate(labels):
        targets[row, classes] = 1.0
    torch.manual_seed(seed)
    head = torch.nn.Linear(tower.config.hidden_size, n_classes)
    cls_head = torch.nn.Linear(tower.config.hidden_size, n_classes)
    keep_cls = model.config.vision_feature_select_strategy == "full"
    parameters = [*tower.parameters(), *head.parameters(), *cls_head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    tower.train()
    losses = []
    for _ in tqdm(range(steps), desc="vision pre-training", disable=not progress, leave=False):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        features = tower(pixels[index], output_hidden_states=True).hidden_states[layer]  # (B, 1 + P, D)
        scores = head(features[:, 1:]).amax(dim=1)  # (B, C)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, targets[index])
        if keep_cls:  # the CLS token the projector also sees: a summary of the whole image
            cls_scores = cls_head(features[:, 0])
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(cls_scores, targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def train_demo_model(
    model: Any,
    processor: Any,
    train_json: str | Path,
    image_folder: str | Path,
    output_dir: str | Path,
    *,
    seed: int,
    steps: int,
    batch_size: int,
    learning_rate: float,
    stop_at: int | None = None,
    resume_from: str | Path | None = None,
    freeze_vision: bool = True,
    progress: bool = True,
    label: str | None = None,
    **vd_options: Any,
) -> Any:
    """Fine-tune projector and language model fully (no LoRA) with `VDTrainer` for `steps` optimizer steps (cosine
    schedule); returns the trainer.

    Args:
        stop_at (`int`, *optional*): stop after this step and save a checkpoint there (`output_dir/checkpoint-N`).
        resume_from (`str`, *optional*): checkpoint to continue (weights, optimizer, schedule, data order and RNG
            state); `VDTrainer` loads the full-model weights into `model` by their saved names.
        freeze_vision (`bool`, defaults to `True`): keep the vision tower fixed, as LLaVA keeps CLIP.
        label (`str`, *optional*): the run's name (`seed0 vd-neg`): its loss lines are plain lines that start with it
            (instead of the Trainer's bar and bare dicts).
        vd_options: `VDTrainingArguments` fields of the variant (`vd_weighting`, `vd_temperature`, `vd_start`, ...).
    """
    from transformers import PrinterCallback, TrainerCallback

    from vdtrain.data import SupervisedDataset, VDDataCollator, load_conversations
    from vdtrain.models import get_adapter
    from vdtrain.training.config import VDTrainingArguments
    from vdtrain.training.trainer import VDTrainer

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if stop_at is not None and state.global_step >= stop_at:
                control.should_save = control.should_training_stop = True

    class LossLines(TrainerCallback):
        """`[seed0 vd-neg] step 80/160 loss 1.234 vd_mean -0.012 ...`: one plain line per log, named."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if label is None or not logs or "loss" not in logs:
                return
            values = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if k == "loss" or k.startswith("vd_"))
            print(f"[{label}] step {state.global_step}/{state.max_steps} {values}", flush=True)

    args = VDTrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.0,
        seed=seed,
        data_seed=seed,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=max(1, steps // 20),
        disable_tqdm=not progress or label is not None,
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        resume_changed_settings=resume_from is not None,  # the variants branch off the MLE trunk on purpose
        **{"vd_weighting": "none", "vd_temperature": 0.0, "vd_start": 1.0, **vd_options},  # plain MLE unless asked
    )
    model.model.vision_tower.requires_grad_(not freeze_vision)
    adapter = get_adapter(model)
    records = load_conversations(train_json)
    dataset = SupervisedDataset(records, adapter, processor, image_folder, max_length=256, source=str(train_json))
    trainer = VDTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=VDDataCollator.for_processor(processor),
        processing_class=processor,
        callbacks=[StopAt(), LossLines()],
        **adapter.trainer_kwargs(processor),
    )
    if label is not None:
        trainer.remove_callback(PrinterCallback)  # its bare dicts say not which run they belong to
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer


def load_checkpoint_model(checkpoint: str | Path) -> Any:
    """A saved demo model (`save_pretrained` directory or Trainer checkpoint), loaded with `from_pretrained`."""
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(checkpoint)


def count_parameters(model: Any) -> dict[str, int]:
    """Parameters of the vision tower, the projector and the language model."""
    parts = {"vision": model.model.vision_tower, "projector": model.model.multi_modal_projector}
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    counts["language"] = sum(p.numel() for p in model.parameters()) - sum(counts.values())
    return counts
