"""`VDSFTTrainer` with the real TRL: TRL's VLM collator and chat templates, tiny LLaVA and Qwen2-VL."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from datasets import Dataset
from PIL import Image
from tiny import tiny_llava, tiny_qwen2_vl
from transformers import TrainingArguments
from trl import SFTConfig, SFTTrainer

from vdtrain import VDTrainer, VDTrainingArguments, token_weights
from vdtrain.compat import spell_training_fields
from vdtrain.integrations.trl import VDSFTConfig, VDSFTTrainer, end_of_turn_token_id
from vdtrain.training.batches import images_per_row, rows_with_images
from vdtrain.training.mixin import check_not_packed

# Vicuna-v1-like, with TRL's {% generation %} markers so assistant_only_loss masks everything but the answers.
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %} ASSISTANT:"
    "{% else %}{% generation %} {% for part in message['content'] %}{{ part['text'] }}{% endfor %}</s>"
    "{% endgeneration %}{% endif %}{% endfor %}"
)
# tests/tiny.py's Qwen2-VL template with the assistant turns (and their `<|im_end|>`) inside generation markers.
QWEN2_VL_TRAINING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}<|im_end|>{% endgeneration %}\n"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ANSWERS = ("there is a red cat on a blue mat.", "a dog sits next to a tree.", "two apples in a box.", "yes it is.")


def _image(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray(
        torch.randint(0, 255, (size, size, 3), generator=torch.Generator().manual_seed(seed)).to(torch.uint8).numpy()
    )


def _dataset(count: int = 4, size: int = 32) -> Dataset:
    rows = []
    for i in range(count):
        messages = [
            {"role": "user", "content": "describe this image in detail."},
            {"role": "assistant", "content": ANSWERS[i % 4]},
            {"role": "user", "content": "what color are the objects?"},
            {"role": "assistant", "content": ANSWERS[(i + 1) % 4]},
        ]
        rows.append({"images": [_image(i, size)], "messages": messages})
    return Dataset.from_list(rows)


def _llava():
    model, processor = tiny_llava()
    processor.chat_template = LLAVA_TEMPLATE
    return model, processor


def _config(tmp_path, cls=VDSFTConfig, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        seed=3,
        save_strategy="no",
        disable_tqdm=True,
        max_length=None,
        assistant_only_loss=True,
        gradient_checkpointing=False,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
    )
    known = {spec.name for spec in dataclasses.fields(cls)}
    return cls(**spell_training_fields({**defaults, **kwargs}, known))  # 5.24: activation_checkpointing


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _num_items(batch):
    return batch["labels"][:, 1:].ne(-100).sum()


def _loss_and_grads(trainer, batch):
    model = trainer.model.train()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=_num_items(batch))
    loss.backward()
    return loss.detach(), _grads(model)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("options", [{"vd_weighting": "none"}, {"vd_temperature": 0.0}])
def test_neutral_weights_equal_sft_trainer(tmp_path, family, options):
    model, processor = _llava() if family == "llava" else tiny_qwen2_vl(template=QWEN2_VL_TRAINING_TEMPLATE)
    data = _dataset(size=32 if family == "llava" else 64)
    sft = SFTTrainer(
        model=copy.deepcopy(model), args=_config(tmp_path, SFTConfig), train_dataset=data, processing_class=processor
    )
    batch = sft.data_collator([data[i] for i in range(3)])
    assert (batch["labels"] != -100).sum() < batch["attention_mask"].sum()  # assistant_only_loss masked the prompts
    vd = VDSFTTrainer(
        model=copy.deepcopy(model),
        args=_config(tmp_path, vd_start=0.0, **options),
        train_dataset=data,
        processing_class=processor,
    )
    vd.state.max_steps = 10
    assert vd.vd_active()
    counter = _Forwards(vd.model)
    loss_sft, grads_sft = _loss_and_grads(sft, batch)
    loss_vd, grads_vd = _loss_and_grads(vd, batch)
    assert counter.grad == 1 and counter.no_grad == 1  # one training forward, one noisy one
    assert counter.fused == [True, True]  # both through TRL's fused LM head: no (B, L, V) logits
    assert torch.allclose(loss_vd, loss_sft, rtol=1e-6, atol=0)
    assert grads_sft.keys() == grads_vd.keys() and len(grads_vd) > 10
    for name in grads_sft:
        assert torch.allclose(grads_vd[name], grads_sft[name], atol=1e-6), name
    assert vd._vd_metrics  # the active step recorded d


class _Forwards:
    def __init__(self, model):
        self.grad = self.no_grad = 0
        self.fused = []
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.fused.append(bool(kwargs.get("fused_lm_head")))
        if torch.is_grad_enabled():
            self.grad += 1
        else:
            self.no_grad += 1


def test_train_before_and_after_vd_start_against_sft_trainer(tmp_path):
    """Before vd_start the run is SFTTrainer's (same losses, no extra forward); after it one extra forward per step,
    the loss moves and the vd_* metrics sit in log_history next to TRL's entropy and token accuracy."""
    model, processor = _llava()
    data = _dataset(8)
    runs = {}
    for name, trainer_cls, config_cls in (("sft", SFTTrainer, SFTConfig), ("vd", VDSFTTrainer, VDSFTConfig)):
        extra = {"vd_start": 0.5, "vd_temperature": 3.0} if name == "vd" else {}
        args = _config(tmp_path, config_cls, max_steps=4, gradient_checkpointing=True, **extra)  # TRL's default
        trainer = trainer_cls(model=copy.deepcopy(model), args=args, train_dataset=data, processing_class=processor)
        counter = _Forwards(trainer.model)
        trainer.train()
        runs[name] = ([entry for entry in trainer.state.log_history if "loss" in entry], counter)
    (sft_logs, sft_count), (vd_logs, vd_count) = runs["sft"], runs["vd"]
    assert sft_count.grad == vd_count.grad == 4 and sft_count.no_grad == 0
    assert vd_count.no_grad == 2  # steps 2 and 3 only
    assert [entry["loss"] for entry in vd_logs[:2]] == [entry["loss"] for entry in sft_logs[:2]]
    assert vd_logs[2]["loss"] != sft_logs[2]["loss"]
    assert [("vd_mean" in entry) for entry in vd_logs] == [False, False, True, True]
    for entry in vd_logs:
        assert "entropy" in entry and "mean_token_accuracy" in entry and "num_tokens" in entry
    for entry in vd_logs[2:]:
        assert -1 <= entry["vd_mean"] <= 1 and entry["vd_weight_max"] >= 1.0


def test_reweighted_loss_equals_vdtrainer_and_hand_computation(tmp_path):
    """The same batch through VDSFTTrainer (fused head) and VDTrainer (masked logits): same d, same loss; the loss
    is the weighted NLL with the EOS floor at the template's `</s>` (found from the processor, not the batch)."""
    model, processor = _llava()
    data = _dataset()
    options = dict(vd_start=0.0, vd_temperature=2.0, vd_eos_min_weight=1.3)
    vd = _Capture(
        model=copy.deepcopy(model), args=_config(tmp_path, **options), train_dataset=data, processing_class=processor
    )
    eos = processor.tokenizer.eos_token_id
    assert vd.end_of_turn_id == eos == end_of_turn_token_id(processor)
    batch = vd.data_collator([data[i] for i in range(2)])
    vd.state.max_steps = 10
    loss = vd.compute_loss(vd.model.train(), dict(batch), num_items_in_batch=_num_items(batch))

    class Plain(_Seen, VDTrainer):
        pass

    plain_model = copy.deepcopy(model).train()
    args = VDTrainingArguments(str(tmp_path / "plain"), use_cpu=True, report_to="none", seed=3, **options)
    plain = Plain(model=plain_model, args=args, end_of_turn_id=eos)
    plain.state.max_steps = 10
    expected = plain.compute_loss(plain_model, dict(batch), num_items_in_batch=_num_items(batch))
    assert torch.allclose(vd.seen[0], plain.seen[0], atol=1e-5) and vd.seen[0].abs().sum() > 0
    assert torch.allclose(loss, expected, rtol=1e-5)

    d, mask, end_of_turn = vd.seen
    labels = batch["labels"]
    assert torch.equal(end_of_turn & mask, (labels == eos) & mask) and (end_of_turn & mask).sum() == 4
    with torch.no_grad():
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
        logits = model.train()(**inputs).logits[:, :-1].float()
    picked = torch.log_softmax(logits, -1).gather(-1, labels[:, 1:].clamp_min(0)[..., None])[..., 0]
    lc = torch.nn.functional.pad(picked, (1, 0)) * mask
    w = token_weights(d, mask, scheme="neg", temperature=2.0, end_of_turn_mask=end_of_turn, eos_min_weight=1.3)
    assert torch.allclose(loss, -(w * lc).sum() / _num_items(batch), rtol=1e-5)
    assert (w[end_of_turn & mask] >= 1.3).all() and torch.allclose(w.sum(-1), mask.sum(-1).float(), rtol=0.3)


class _Seen:
    """Records what the documented weighting hook receives."""

    def compute_token_weights(self, d, mask, end_of_turn_mask):
        self.seen = (d.clone(), mask.clone(), end_of_turn_mask.clone())
        return super().compute_token_weights(d, mask, end_of_turn_mask)


class _Capture(_Seen, VDSFTTrainer):
    pass


def test_qwen2_vl_end_of_turn_from_the_template_and_an_active_step(tmp_path):
    model, processor = tiny_qwen2_vl(template=QWEN2_VL_TRAINING_TEMPLATE)
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_token_id(processor) == im_end != processor.tokenizer.eos_token_id
    data = _dataset(4, size=64)
    trainer = VDSFTTrainer(
        model=model, args=_config(tmp_path, vd_start=0.0, max_steps=2), train_dataset=data, processing_class=processor
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all("vd_mean" in entry and "entropy" in entry for entry in logged)
    assert sum(not torch.equal(p, before[n]) for n, p in model.named_parameters()) > 10


def _qwen2_vl_step(tmp_path, batch: int, accumulation: int, cls=VDSFTTrainer, config_cls=VDSFTConfig, **extra):
    model, processor = tiny_qwen2_vl(template=QWEN2_VL_TRAINING_TEMPLATE)
    rows = [
        {"images": [_image(i, 32 if i % 2 else 64)], "messages": row["messages"]} for i, row in enumerate(_dataset(4))
    ]
    args = _config(
        tmp_path / f"{cls.__name__}-{batch}x{accumulation}",
        config_cls,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        **extra,
    )
    trainer = cls(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor)
    trainer.train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}, trainer


def test_qwen2_vl_flattened_patches_get_per_sample_noise(tmp_path):
    """Qwen2-VL flattens every image into patches (`image_grid_thw` says how many): each image still gets its own
    seeded noise, so batch 4 and batch 2 x accumulation 2 take the same re-weighted step (SFTTrainer's own gap
    between the two layouts bounds ours), and TRL batches, which carry no `has_image`, find the image rows."""
    model, processor = tiny_qwen2_vl(template=QWEN2_VL_TRAINING_TEMPLATE)
    trainer = VDSFTTrainer(
        model=model, args=_config(tmp_path, vd_start=0.0), train_dataset=_dataset(2), processing_class=processor
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    patches = batch["image_grid_thw"].prod(dim=-1).tolist()
    assert len(patches) == 2 and sum(patches) == batch["pixel_values"].shape[0]
    assert trainer._images_per_row(model, batch).tolist() == [1, 1]

    def gap(cls, config_cls, **extra):
        one, _ = _qwen2_vl_step(tmp_path, 4, 1, cls, config_cls, **extra)
        two, _ = _qwen2_vl_step(tmp_path, 2, 2, cls, config_cls, **extra)
        return max((one[name] - two[name]).abs().max().item() for name in one), one

    sft_gap, sft = gap(SFTTrainer, SFTConfig)
    vd_gap, vd = gap(VDSFTTrainer, VDSFTConfig, vd_start=0.0, vd_temperature=2.0)
    assert vd_gap <= 2 * sft_gap + 1e-6, (vd_gap, sft_gap)
    assert max((vd[name] - sft[name]).abs().max().item() for name in vd) > 10 * (sft_gap + 1e-7)  # it re-weighted


class _NoiseKeys(VDSFTTrainer):
    """Records the (step, key, shape) of every noise draw."""

    def _randn(self, shape, step, key, device):
        self.keys = [*getattr(self, "keys", []), (step, key, tuple(shape))]
        return super()._randn(shape, step, key, device)


def _noise_keys(tmp_path, model, processor, rows, batch: int, accumulation: int) -> list:
    args = _config(
        tmp_path / f"keys-{batch}x{accumulation}",
        max_steps=1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        vd_start=0.0,
        vd_temperature=2.0,
    )
    trainer = _NoiseKeys(
        model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(rows), processing_class=processor
    )
    trainer.train()
    return trainer.keys


def test_text_only_micro_batch_keeps_the_noise_positions(tmp_path):
    """A micro-batch of text-only samples draws no noise but still counts: with seed 3 the two image samples come
    last, so batch 2 x accumulation 2 must key them 2 and 3, as batch 4 does (it keyed them 0 and 1)."""
    model, processor = _llava()
    rows = [{**row, "images": [] if i in (2, 3) else row["images"]} for i, row in enumerate(_dataset(4))]
    one = _noise_keys(tmp_path, model, processor, rows, 4, 1)
    assert [key for _, key, _ in one] == [2, 3]
    assert _noise_keys(tmp_path, model, processor, rows, 2, 2) == one


def test_qwen2_vl_several_images_in_a_sample_get_one_draw_each(tmp_path):
    """Two images per sample (Qwen2-VL patches): each image is found from its run of image tokens and gets its own
    key, so batch 4 and batch 2 x accumulation 2 draw the same noise (they drew one micro-batch-wide tensor)."""
    model, processor = tiny_qwen2_vl(template=QWEN2_VL_TRAINING_TEMPLATE)
    rows = []
    for i, row in enumerate(_dataset(4)):
        question = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "describe these images."}]
        turns = [{"role": "user", "content": question}] + [
            {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in row["messages"][1:]
        ]
        rows.append({"images": [_image(i, 32), _image(i + 10, 64)], "messages": turns})
    trainer = VDSFTTrainer(
        model=model,
        args=_config(tmp_path, vd_start=0.0),
        train_dataset=Dataset.from_list(rows[:2]),
        processing_class=processor,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["image_grid_thw"].shape[0] == 4
    assert trainer._images_per_row(model, batch).tolist() == [2, 2]
    image, text = model.config.image_token_id, processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    tiles = {  # one image per sample in 2 token runs (tiles, as Idefics3 lays them out), one pixel row per sample
        "input_ids": torch.tensor([[text, image, image, text, image, text], [text] * 6]),
        "pixel_values": torch.zeros(1, 3, 8, 8),
    }
    assert trainer._images_per_row(model, tiles).tolist() == [1, 0]
    one = _noise_keys(tmp_path, model, processor, rows, 4, 1)
    assert len(one) == 8 and len({key for _, key, _ in one}) == 8
    assert {shape[0] for _, _, shape in one} == {16, 64}  # one draw per image: 4x4 and 8x8 patches
    assert _noise_keys(tmp_path, model, processor, rows, 2, 2) == one


def test_image_rows_found_from_the_image_token_when_pixels_do_not_split_per_image():
    """Pixel rows that match neither the image-token runs nor the rows holding the token (Inkling: every image's
    patches concatenated, no grid) leave `images_per_row` None; the image rows are still the rows holding the
    config's image token, so a TRL batch (no `has_image`) keeps `d = 0` on its text-only rows (it left them
    unmasked: float noise of the noisy pass weighted them)."""
    model, processor = tiny_qwen2_vl(template=QWEN2_VL_TRAINING_TEMPLATE)
    image, text = model.config.image_token_id, processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    batch = {
        "input_ids": torch.tensor([[text, image, image, text], [text] * 4, [image, text, image, text]]),
        "pixel_values": torch.zeros(7, 3, 8, 8),  # 7 patch rows for the images of two samples, no grid
    }
    per_row = images_per_row(model, batch, None)
    assert per_row is None
    assert rows_with_images(model, batch, per_row).tolist() == [True, False, True]
    grid = {**batch, "pixel_values": torch.zeros(3, 3, 8, 8)}  # one pixel row per image: the runs count them
    assert rows_with_images(model, grid, images_per_row(model, grid, None)).tolist() == [True, False, True]


def test_return_outputs_on_an_active_step(tmp_path):
    """`compute_loss(..., return_outputs=True)` while training (a subclass logging the outputs): SFTTrainer adds a
    logits forward for them, which the re-weighting stand-in refused as "not the fused LM head"."""
    model, processor = _llava()
    trainer = VDSFTTrainer(
        model=model, args=_config(tmp_path, vd_start=0.0), train_dataset=_dataset(), processing_class=processor
    )
    trainer.state.max_steps = 10
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    alone = trainer.compute_loss(model.train(), dict(batch), num_items_in_batch=_num_items(batch))
    trainer._noise_counter = (-1, -1)  # the same micro-batch again: the same noise
    with pytest.warns(FutureWarning, match="return_outputs"):
        loss, outputs = trainer.compute_loss(model, dict(batch), True, _num_items(batch))
    assert torch.allclose(loss, alone, rtol=1e-6) and outputs.logits.shape[:2] == batch["input_ids"].shape


def test_resume_mid_vd_equals_the_uninterrupted_run(tmp_path):
    """A full fine-tune resumed from checkpoint-2 of 4, the VD loss on throughout: the same weights and losses as the
    run without a break. SFTTrainer's own loader took the LLaVA checkpoint's saved names for unknown keys and left
    the model as it was (weights off by ~7e-2); VDSFTTrainer loads it as VDTrainer does."""
    model, processor = _llava()
    args = _config(
        tmp_path, max_steps=4, save_strategy="steps", save_steps=2, vd_start=0.0, vd_temperature=2.0, optim="sgd"
    )
    runs = []
    for resume in (None, str(tmp_path / "out" / "checkpoint-2")):
        trainer = VDSFTTrainer(
            model=copy.deepcopy(model), args=args, train_dataset=_dataset(8), processing_class=processor
        )
        trainer.train(resume_from_checkpoint=resume)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        runs.append(({n: p.detach().clone() for n, p in trainer.model.named_parameters()}, losses[-2:]))
    (whole, whole_losses), (resumed, resumed_losses) = runs
    assert resumed_losses == pytest.approx(whole_losses, rel=1e-6)
    for name in whole:
        assert torch.allclose(resumed[name], whole[name], atol=1e-6), name


def test_a_step_interrupted_and_resumed_on_the_same_trainer_keeps_its_noise(tmp_path):
    """Ctrl-C (or an OOM) after the first micro-batch of step 2, then `train(resume_from_checkpoint=...)` on the same
    trainer: step 2 keys its samples 0-3 again (it continued the stale micro-batch count: 2-5)."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        armed = True

        def on_substep_end(self, args, state, control, **kwargs):
            if self.armed and state.global_step == 2:
                self.armed = False
                raise KeyboardInterrupt

    model, processor = _llava()
    args = _config(
        tmp_path, max_steps=3, save_strategy="steps", save_steps=2, vd_start=0.0, gradient_accumulation_steps=2
    )
    trainer = _NoiseKeys(
        model=model, args=args, train_dataset=_dataset(12), processing_class=processor, callbacks=[Interrupt()]
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    trainer.keys = []
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert [(step, key) for step, key, _ in trainer.keys] == [(2, 0), (2, 1), (2, 2), (2, 3)]


def test_auto_find_batch_size_keys_by_the_batch_it_settled_on(tmp_path):
    """`auto_find_batch_size`: a run resumed from a checkpoint whose batch finder settled on 2 trains with batches of
    2 while `per_device_train_batch_size` still says 4; its samples are keyed 0-3 as in the first run (were 0, 1, 4,
    5: positions counted in steps of 4)."""
    model, processor = _llava()
    runs = []
    for batch, resume in ((2, None), (4, str(tmp_path / "out" / "checkpoint-1"))):
        args = _config(
            tmp_path,
            max_steps=2,
            save_strategy="steps",
            save_steps=1,
            vd_start=0.0,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=2,
            auto_find_batch_size=True,
        )
        trainer = _NoiseKeys(
            model=copy.deepcopy(model), args=args, train_dataset=_dataset(8), processing_class=processor
        )
        trainer.train(resume_from_checkpoint=resume)
        runs.append([(step, key) for step, key, _ in trainer.keys if step == 1])
    assert runs[1] == runs[0] == [(1, 0), (1, 1), (1, 2), (1, 3)]


def test_packing_is_refused_clearly(tmp_path):
    model, processor = _llava()
    text = Dataset.from_list([{"text": "a red cat on a blue mat."}] * 4)
    with pytest.raises(ValueError, match="packing=False and padding_free=False"):
        VDSFTTrainer(
            model=model,
            args=_config(tmp_path, vd_start=0.5, padding_free=True, packing=True, assistant_only_loss=False),
            train_dataset=text,
            processing_class=processor.tokenizer,
        )
    packed = {"input_ids": torch.ones(1, 6, dtype=torch.long), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2]])}
    with pytest.raises(ValueError, match="packs several samples"):
        check_not_packed(packed)
    check_not_packed({"position_ids": torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])})  # one sample per row: fine


def test_sequence_parallelism_is_refused_clearly(tmp_path):
    """DeepSpeed Ulysses (sp_size > 1): SFTTrainer takes the model's own loss there, so the VD weights were dropped
    silently after paying for the noisy pass; and each rank would hold only a slice of a sample."""
    from accelerate.parallelism_config import ParallelismConfig

    model, processor = _llava()
    parallel = ParallelismConfig(sp_size=2, sp_backend="deepspeed")
    with pytest.raises(ValueError, match="sequence/context parallelism"):
        VDSFTTrainer(
            model=model,
            args=_config(tmp_path, vd_start=0.5, parallelism_config=parallel),
            train_dataset=_dataset(),
            processing_class=processor,
        )


def test_plain_training_arguments_and_old_names(tmp_path):
    model, processor = _llava()
    args = TrainingArguments(str(tmp_path / "plain"), use_cpu=True, report_to="none", max_steps=1)
    trainer = VDSFTTrainer(model=model, args=args, train_dataset=_dataset(), processing_class=processor)
    assert isinstance(trainer.args, VDSFTConfig) and trainer.vd.vd_start == 0.5 and trainer.args.max_steps == 1
    with pytest.warns(FutureWarning, match="vd_projector_lr"):
        config = _config(tmp_path, projector_lr=1e-4)
    assert config.vd_projector_lr == 1e-4
    with pytest.raises(ValueError, match="TRL's fused LM head"):
        VDSFTTrainer(
            model=model,
            args=_config(tmp_path, vd_eos_selective=True),
            train_dataset=_dataset(),
            processing_class=processor,
        )


def test_a_plain_sft_config_keeps_its_token_fields(tmp_path):
    """`VDSFTTrainer(args=SFTConfig(...))`: `TrainingArguments.to_dict` replaces every `*_token` field by a placeholder
    ("<EOS_TOKEN>"), which TRL then refused as an eos_token missing from the vocabulary; the real values are kept."""
    model, processor = _llava()
    for eos, pad in ((None, None), ("</s>", "<unk>")):
        args = _config(tmp_path, SFTConfig, max_steps=1, eos_token=eos, pad_token=pad)
        trainer = VDSFTTrainer(model=model, args=args, train_dataset=_dataset(), processing_class=processor)
        assert isinstance(trainer.args, VDSFTConfig) and trainer.vd.vd_start == 0.5
        assert (trainer.args.eos_token, trainer.args.pad_token) == (eos, pad)
        assert processor.tokenizer.eos_token == "</s>" and trainer.end_of_turn_id == processor.tokenizer.eos_token_id


@dataclasses.dataclass
class _ProjectConfig(SFTConfig):
    """A project's own SFTConfig subclass with a field its trainer reads."""

    curriculum: str = "easy-first"


def test_a_config_subclass_keeps_its_own_fields(tmp_path):
    """Upgrading to VDSFTConfig kept only VDSFTConfig's fields: `trainer.args.curriculum` was an AttributeError."""
    model, processor = _llava()
    args = _config(tmp_path, _ProjectConfig, max_steps=1, curriculum="hard-first")
    trainer = VDSFTTrainer(model=model, args=args, train_dataset=_dataset(), processing_class=processor)
    assert isinstance(trainer.args, VDSFTConfig) and trainer.args.curriculum == "hard-first"
    assert trainer.vd.vd_start == 0.5  # a field the project's class lacks takes its default


DDP_SCRIPT = """
import os, sys, torch
sys.path.insert(0, sys.argv[3])
from test_trl import _config, _dataset, _llava
from trl import SFTConfig, SFTTrainer
from vdtrain.integrations.trl import VDSFTConfig, VDSFTTrainer
from vdtrain.training.teardown import end_process_group
from pathlib import Path

for name, trainer_cls, config_cls in (("sft", SFTTrainer, SFTConfig), ("vd", VDSFTTrainer, VDSFTConfig)):
    model, processor = _llava()
    extra = {"vd_start": 0.0, "vd_temperature": 2.0} if name == "vd" else {}
    args = _config(Path(sys.argv[1]) / name, config_cls, max_steps=2, optim="sgd", learning_rate=0.5,
                   lr_scheduler_type="constant", per_device_train_batch_size=int(sys.argv[2]), seed=5, **extra)
    trainer = trainer_cls(model=model, args=args, train_dataset=_dataset(8), processing_class=processor)
    trainer.train()
    if trainer.is_world_process_zero():
        torch.save({n: p.detach() for n, p in model.named_parameters()}, Path(sys.argv[1]) / f"weights-{name}.pt")
        torch.save(trainer.state.log_history, Path(sys.argv[1]) / f"logs-{name}.pt")
end_process_group(trainer)  # gloo's threads end here, not at interpreter exit (which could abort with exit -6)
threads = sorted(Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir())
Path(sys.argv[1], f"threads-{os.environ['RANK']}.txt").write_text(" ".join(threads))
"""


@pytest.mark.slow
def test_ddp_two_processes_equal_one(tmp_path):
    """Re-weighting active on every step: 2 processes x batch 2 reproduce 1 process x batch 4 (data sharding, the
    per-sample noise seeding and TRL's loss normalisation across ranks) as closely as SFTTrainer itself does: on this
    stack TRL's own 1- vs 2-process runs differ by ~4e-4 (relative) in the gradient norm, float order in its path."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT)
    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(tests).parent), tests, env.get("PYTHONPATH", "")])
    runs = {}
    for nproc, batch in ((1, 4), (2, 2)):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        folder = tmp_path / f"n{nproc}"
        folder.mkdir()
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            f"--master_port={port}",
            str(script),
            str(folder),
            str(batch),
            tests,
        ]
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
        for rank in range(nproc):  # no gloo thread outlives end_process_group (DDP's reducer and a default held it)
            threads = (folder / f"threads-{rank}.txt").read_text().split()
            assert not [name for name in threads if "gloo" in name], threads
        for name in ("sft", "vd"):
            logs = torch.load(folder / f"logs-{name}.pt", weights_only=False)
            runs[nproc, name] = torch.load(folder / f"weights-{name}.pt"), [e for e in logs if "loss" in e]

    def gap(name):
        (one, _), (two, _) = runs[1, name], runs[2, name]
        return max((one[key] - two[key]).abs().max().item() for key in one)

    assert gap("vd") <= 2 * gap("sft") + 1e-6, (gap("vd"), gap("sft"))
    vd_one, sft_one = runs[1, "vd"][0], runs[1, "sft"][0]
    assert max((vd_one[key] - sft_one[key]).abs().max().item() for key in vd_one) > 10 * gap("sft")  # it re-weighted
    (_, logs_one), (_, logs_two) = runs[1, "vd"], runs[2, "vd"]
    assert [e["step"] for e in logs_one] == [e["step"] for e in logs_two] == [1, 2]
    assert logs_one[0]["loss"] == pytest.approx(logs_two[0]["loss"], rel=1e-6)
    for a, b in zip(logs_one, logs_two):
        assert a["vd_weight_max"] == pytest.approx(b["vd_weight_max"], abs=1e-3) and a["vd_weight_max"] > 1.0


SPLIT_SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_trl import _NoiseKeys, _config, _dataset, _llava
from vdtrain.training.teardown import end_process_group
from pathlib import Path

model, processor = _llava()
args = _config(Path(sys.argv[1]), max_steps=1, per_device_train_batch_size=4, vd_start=0.0, seed=5,
               accelerator_config={"split_batches": True})
trainer = _NoiseKeys(model=model, args=args, train_dataset=_dataset(8), processing_class=processor)
trainer.train()
torch.save(trainer.keys, Path(sys.argv[1]) / f"keys-{trainer.args.process_index}.pt")
end_process_group(trainer)
"""


@pytest.mark.slow
def test_split_batches_keys_the_samples_by_their_global_position(tmp_path):
    """`accelerator_config={"split_batches": True}`: 2 processes share one batch of 4, so rank 1 holds samples 2 and
    3 of it, the samples 1 process x batch 4 keys 2 and 3 (it keyed them 4 and 5, as if each rank had 4)."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "split.py"
    script.write_text(SPLIT_SCRIPT)
    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(tests).parent), tests, env.get("PYTHONPATH", "")])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    run = subprocess.run([*command, str(script), str(tmp_path), tests], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    keys = [[key for _, key, _ in torch.load(tmp_path / f"keys-{rank}.pt")] for rank in (0, 1)]
    assert keys == [[0, 1], [2, 3]]


class _NaNLossAtStep2(VDSFTTrainer):
    """The loss of the second optimizer step is NaN (as a diverged run's would be)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.state.global_step != 1:
            return result
        return (result[0] * float("nan"), *result[1:]) if return_outputs else result * float("nan")


def test_a_nonfinite_step_stops_or_is_skipped_as_in_vdtrainer(tmp_path):
    """VDSFTTrainer had no non-finite stop: TRL applied the NaN gradients and the run ended with NaN weights."""
    from vdtrain.errors import TrainingDiverged

    model, processor = _llava()
    args = _config(tmp_path / "stop", max_steps=3, vd_start=0.0)
    trainer = _NaNLossAtStep2(model=model, args=args, train_dataset=_dataset(8), processing_class=processor)
    with pytest.raises(TrainingDiverged, match="^step 2: the loss is nan and the gradient norm is nan; stopped"):
        trainer.train()
    assert trainer.state.global_step == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step was never applied

    model, processor = _llava()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = _config(tmp_path / "skip", max_steps=3, vd_start=0.0, skip_nonfinite_steps=True)
    trainer = _NaNLossAtStep2(model=model, args=args, train_dataset=_dataset(8), processing_class=processor)
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.vd_skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert sum(not torch.equal(p, before[n]) for n, p in model.named_parameters()) > 10  # steps 1 and 3 trained
