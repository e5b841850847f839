"""Every model family end to end on tiny models: exact label spans, end-of-turn flags, processor equality, two
VDTrainer steps with the noisy pass, save/load round trips and `vdtrain train` from a YAML recipe."""

from __future__ import annotations

import pytest
import tiny
import torch
from PIL import Image

from vdtrain import VDTrainer, VDTrainingArguments
from vdtrain.data import SupervisedDataset, VDDataCollator, load_conversations
from vdtrain.models import get_adapter
from vdtrain.models.base import IGNORE_INDEX
from vdtrain.models.loading import prepare_for_training
from vdtrain.training.config import ModelArguments

FAMILIES = ["llava", "paligemma", "qwen2_vl", "gemma3", "bunny"]
MESSAGES = [
    {"role": "user", "content": "<image>\ndescribe this image"},
    {"role": "assistant", "content": "there is a red cat."},
    {"role": "user", "content": "what color is the mat?"},
    {"role": "assistant", "content": "blue."},
]
# Supervised runs of MESSAGES, decoded (one run per assistant turn), and the flagged end-of-turn token.
SUPERVISED = {
    "llava": ([" there is a red cat.</s>", " blue.</s>"], "</s>"),
    "paligemma": (["there is a red cat.</s>", "blue.</s>"], "</s>"),  # one example per turn
    "qwen2_vl": (["there is a red cat.<|im_end|>", "blue.<|im_end|>"], "<|im_end|>"),
    "gemma3": (["there is a red cat.<end_of_turn>", "blue.<end_of_turn>"], "<end_of_turn>"),
    "bunny": ([" there is a red cat.<|end_of_text|>", " blue.<|end_of_text|>"], "<|end_of_text|>"),
}
# Image tokens of one 32-px image: 4x4 patches (LLaVA/PaliGemma/Bunny), merged 2x2 (Qwen2-VL), pooled (Gemma-3).
IMAGE_TOKENS = {"llava": 16, "paligemma": 16, "qwen2_vl": 4, "gemma3": 4, "bunny": 16}
# Per-token inputs each family's forwards need beside input_ids/attention_mask (noisy forward included).
TOKEN_FIELDS = {"paligemma": "token_type_ids", "qwen2_vl": "mm_token_type_ids", "gemma3": "token_type_ids"}


@pytest.fixture(scope="session")
def llama3_dir():
    return tiny.require_tokenizer_dir(tiny.LLAMA3_NPM)


def build(family: str, request: pytest.FixtureRequest):
    """`(model, processor)` of a tiny model of `family`."""
    if family == "bunny":
        from transformers import AutoTokenizer

        return tiny.tiny_bunny(AutoTokenizer.from_pretrained(request.getfixturevalue("llama3_dir")))
    return {
        "llava": tiny.tiny_llava,
        "paligemma": tiny.tiny_paligemma,
        "qwen2_vl": tiny.tiny_qwen2_vl,
        "gemma3": tiny.tiny_gemma3,
    }[family]()


def supervised_runs(tokenizer, example) -> list[str]:
    """Decoded runs of consecutive supervised tokens."""
    runs, current = [], []
    for label in [*example.labels, IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(tokenizer.decode(current, clean_up_tokenization_spaces=False))
            current = []
    return runs


@pytest.mark.parametrize("family", FAMILIES)
def test_supervised_span_and_end_of_turn(family, request):
    model, processor = build(family, request)
    adapter = get_adapter(model, processor)
    tokenizer = processor.tokenizer
    count = adapter.num_image_tokens(processor, (32, 32))
    examples = adapter.encode(MESSAGES, processor, count, sample_id="s0")
    runs = [run for example in examples for run in supervised_runs(tokenizer, example)]
    expected_runs, eot = SUPERVISED[family]
    assert runs == expected_runs
    assert adapter.end_of_turn_id(processor) == tokenizer.convert_tokens_to_ids(eot)
    image_id = adapter.image_token_id(processor)
    assert sum(token == image_id for token in examples[0].input_ids) == count == IMAGE_TOKENS[family]
    for example in examples:
        flagged = [token for token, flag in zip(example.input_ids, example.end_of_turn_mask) if flag]
        assert tokenizer.decode(flagged) == eot * (len(expected_runs) // len(examples))
        for index, flag in enumerate(example.end_of_turn_mask):
            if flag and index + 1 < len(example.labels):  # what follows the closing token (a newline) is not trained
                assert example.labels[index + 1] == IGNORE_INDEX
        assert all(label != image_id for label in example.labels)
    if family in TOKEN_FIELDS:
        assert all(TOKEN_FIELDS[family] in example.extra for example in examples)


def test_paligemma_encode_equals_processor_with_suffix():
    _, processor = tiny.tiny_paligemma()
    adapter = get_adapter("paligemma")
    messages = [
        {"role": "user", "content": "<image>\ndescribe this image"},
        {"role": "assistant", "content": "a cat."},
    ]
    (example,) = adapter.encode(messages, processor, adapter.num_image_tokens(processor, (32, 32)))
    batch = processor(text="<image>describe this image", images=Image.new("RGB", (32, 32)), suffix="a cat.")
    assert example.input_ids == list(batch["input_ids"][0])
    assert example.extra["token_type_ids"] == list(batch["token_type_ids"][0])
    assert example.labels == list(batch["labels"][0])
    assert example.end_of_turn_mask == [i == len(example.input_ids) - 1 for i in range(len(example.input_ids))]


@pytest.mark.parametrize(("family", "size"), [("qwen2_vl", (32, 32)), ("qwen2_vl", (48, 32)), ("gemma3", (48, 32))])
def test_chat_template_encode_equals_processor(family, size, request):
    """The processor's own expansion of the rendered chat, token for token, with its type field."""
    _, processor = build(family, request)
    adapter = get_adapter(family, processor)
    (example,) = adapter.encode(MESSAGES, processor, adapter.num_image_tokens(processor, size))
    chat = processor.apply_chat_template(
        [
            {"role": m["role"], "content": [{"type": "text", "text": m["content"].replace("<image>\n", "")}]}
            if i
            else {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe this image"}]}
            for i, m in enumerate(MESSAGES)
        ],
        tokenize=False,
    )
    batch = processor(text=chat, images=Image.new("RGB", size), add_special_tokens=False)
    assert example.input_ids == list(batch["input_ids"][0])
    field = TOKEN_FIELDS[family]
    assert example.extra[field] == list(batch[field][0])


def test_qwen2_vl_image_tokens_follow_image_size():
    _, processor = tiny.tiny_qwen2_vl()
    adapter = get_adapter("qwen2_vl", processor)
    assert adapter.image_tokens_depend_on_size
    assert adapter.num_image_tokens(processor, (32, 32)) == 4  # (32/8)^2 patches merged 2x2
    assert adapter.num_image_tokens(processor, (48, 32)) == 6


def test_generation_tags_give_the_same_labels_as_prefix_difference():
    tagged = tiny.QWEN2_VL_TEMPLATE.replace(
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n",
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        "{% elif message['role'] == 'assistant' %}{% generation %}{{ message['content'][0]['text'] }}<|im_end|>"
        "{% endgeneration %}{{ '\\n' }}",  # trim_blocks eats a newline after a tag
    )
    assert tagged != tiny.QWEN2_VL_TEMPLATE
    results = []
    for template in (tiny.QWEN2_VL_TEMPLATE, tagged):
        _, processor = tiny.tiny_qwen2_vl(template=template)
        adapter = get_adapter("qwen2_vl", processor)
        (example,) = adapter.encode(MESSAGES, processor, 4)
        results.append((example.input_ids, example.labels, example.end_of_turn_mask))
    assert results[0] == results[1]


def test_generic_fallback_for_an_unregistered_model_type():
    from vdtrain.models import ChatTemplateAdapter

    _, processor = tiny.tiny_qwen2_vl()
    adapter = get_adapter("some_new_vlm", processor)
    assert type(adapter) is ChatTemplateAdapter
    (example,) = adapter.encode(MESSAGES, processor, adapter.num_image_tokens(processor, (32, 32)))
    assert supervised_runs(processor.tokenizer, example) == SUPERVISED["qwen2_vl"][0]


def test_adapter_registry_refuses_a_duplicate_model_type():
    """A model type keeps its adapter unless the new one is registered with override=True (PEFT raises too)."""
    from vdtrain.models import LlavaAdapter, register_adapter

    class MyLlava(LlavaAdapter):
        projector_modules = ("my_projector",)

    with pytest.raises(ValueError, match=r"'llava' \(vdtrain.models.llava.LlavaAdapter\) already has an adapter"):
        register_adapter("llava")(MyLlava)
    assert type(get_adapter("llava")) is LlavaAdapter
    try:
        register_adapter("llava", override=True)(MyLlava)
        assert get_adapter("llava").projector_modules == ("my_projector",)
    finally:
        register_adapter("llava", override=True)(LlavaAdapter)
    assert type(get_adapter("llava")) is LlavaAdapter
    assert register_adapter("llava")(LlavaAdapter) is LlavaAdapter  # the same class again is no duplicate


def test_bunny_pads_images_to_a_square_with_the_mean_colour(request):
    _, processor = build("bunny", request)
    adapter = get_adapter("vdtrain_bunny")
    pixels = adapter.image_inputs(processor, [Image.new("RGB", (64, 32), "white")])["pixel_values"]  # (1, 3, 96, 96)
    assert pixels.shape == (1, 3, 96, 96)
    assert pixels[0, :, 48].min() > 0.99  # the white image in the middle
    assert pixels[0, :, :20].abs().max() < 0.01  # mean-grey bands above and below (0 after SigLIP normalisation)


def _dataset(tmp_path, adapter, processor, count: int = 4):
    names = tiny.write_images(tmp_path / "images", count)
    tiny.write_conversations(tmp_path / "data.json", names, turns=2)
    records = load_conversations(tmp_path / "data.json")
    return SupervisedDataset(records, adapter, processor, tmp_path / "images", source="data.json")


@pytest.mark.parametrize("family", FAMILIES)
def test_two_vd_steps_train_lora_and_projector(family, tmp_path, request):
    model, processor = build(family, request)
    adapter = get_adapter(model, processor)
    dataset = _dataset(tmp_path, adapter, processor)
    lora = ModelArguments(model_name_or_path=family, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    model = prepare_for_training(model, adapter, lora, gradient_checkpointing=False)
    trainable = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}
    assert any("lora_" in name for name in trainable)
    assert any(any(p in name for p in adapter.projector_modules) for name in trainable)
    assert not any("lora_" in name and any(v in name for v in adapter.vision_modules) for name in trainable)

    no_grad_calls: list[dict] = []

    def hook(module, args, kwargs):
        if not torch.is_grad_enabled():
            no_grad_calls.append(kwargs)

    inner = model.get_base_model().model  # the *Model under the LM head; PEFT calls the head's forward directly
    handle = inner.register_forward_pre_hook(hook, with_kwargs=True)
    args = VDTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        use_cpu=True,
        report_to="none",
        vd_start=0.0,
        logging_steps=1,
        remove_unused_columns=False,
        learning_rate=1e-2,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = VDTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=VDDataCollator.for_processor(processor),
        processing_class=processor,
        **adapter.trainer_kwargs(processor),
    )
    trainer.train()
    handle.remove()

    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all("vd_mean" in entry and "vd_frac_neg" in entry for entry in logged)
    assert len(no_grad_calls) == 2  # exactly one noisy forward per step
    for kwargs in no_grad_calls:
        assert kwargs["pixel_values"] is not None
        if family in TOKEN_FIELDS:
            assert kwargs.get(TOKEN_FIELDS[family]) is not None, "the noisy forward lost the per-token field"
    after = dict(model.named_parameters())
    changed = [name for name, value in trainable.items() if not torch.equal(value, after[name].detach())]
    assert any("lora_B" in name for name in changed)
    assert any(any(p in name for p in adapter.projector_modules) for name in changed)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_round_trip(family, tmp_path, request):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = build(family, request)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys() and all(torch.equal(state[k], loaded_state[k]) for k in state)
    adapter, loaded_adapter = get_adapter(model, processor), get_adapter(loaded, loaded_processor)
    assert type(adapter) is type(loaded_adapter)
    size = (32, 32)
    original = adapter.encode(MESSAGES, processor, adapter.num_image_tokens(processor, size))
    again = loaded_adapter.encode(MESSAGES, loaded_processor, loaded_adapter.num_image_tokens(loaded_processor, size))
    assert [(e.input_ids, e.labels, e.extra) for e in original] == [(e.input_ids, e.labels, e.extra) for e in again]
    image = Image.new("RGB", (32, 32), "red")
    batch = loaded_adapter.generation_inputs(
        loaded_processor, [loaded_adapter.prompt("what is it?", processor)], [image]
    )
    with torch.no_grad():
        assert loaded(**batch).logits.shape[:2] == batch["input_ids"].shape


@pytest.mark.parametrize("family", FAMILIES)
def test_vdtrain_train_recipe_trains_each_family(family, tmp_path, request):
    from safetensors.torch import load_file

    from vdtrain.cli import main

    model, processor = build(family, request)
    recipe = tiny.write_training_run(tmp_path, model, processor)
    assert main(["train", str(recipe)]) == 0
    weights = load_file(tmp_path / "out" / "adapter_model.safetensors")
    adapter = get_adapter(model, processor)
    assert any("lora_A" in key and "language_model" in key for key in weights)
    assert any(any(p in key for p in adapter.projector_modules) for key in weights)
