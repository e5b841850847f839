"""`vdtrain analyze`: values against hand computations on the demo's tiny LLaVA, and both commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vdtrain.analysis.object_dependence import (
    analyze_dependence,
    dependence_bin,
    dependence_totals,
    distance_shares,
)
from vdtrain.analysis.saliency import pick_tokens, sample_saliency, select_samples, use_eager_attention
from vdtrain.analysis.spans import object_mentions
from vdtrain.cli import main as cli_main
from vdtrain.data.samples import prepare_sample, sample_generator
from vdtrain.evaluation.chair import extract_objects, load_synonyms
from vdtrain.method.dependence import target_logprobs, token_group, visual_dependence
from vdtrain.method.noise import add_diffusion_noise
from vdtrain.models import get_adapter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CAPTIONS = [
    "There is a red cat on a blue mat next to two dogs.",
    "A dog sits next to a tree, and a cat sits on the toilet seat.",
    "The picture shows two apples in a box.",
]
PROMPT = "Describe this image."


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    """The demo's tiny LLaVA (its tokenizer, processor and model builders), saved, with images and captions."""
    from tiny import write_images

    from vdtrain.demo.model import DemoModelConfig, demo_model, demo_processor, demo_tokenizer

    root = tmp_path_factory.mktemp("analysis")
    config = DemoModelConfig(text_layers=2, vocab_size=400)
    tokenizer = demo_tokenizer([*CAPTIONS, PROMPT, "USER: ASSISTANT:"] * 3, config.vocab_size)
    processor = demo_processor(tokenizer, config)
    model = demo_model(processor, config, seed=0).eval()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    names = write_images(root / "images", len(CAPTIONS))
    return root, model, processor, names


def _captions(names: list[str]) -> list[dict]:
    return [
        {"question_id": name, "image": name, "image_id": k + 1, "prompt": PROMPT, "text": c, "caption": c}
        for k, (name, c) in enumerate(zip(names, CAPTIONS))
    ]


GROUND_TRUTH = {1: {"cat"}, 2: {"dog", "toilet"}, 3: set()}  # image 1: the dogs are hallucinated


def test_mentions_are_chairs_and_span_their_words():
    synonyms = load_synonyms()
    for caption in [*CAPTIONS, 'A "hot dog" beside a baby elephant; people and wine glasses.']:
        mentions = object_mentions(caption, synonyms)
        assert [m.word for m in mentions] == extract_objects(caption, synonyms).words
    mentions = object_mentions(CAPTIONS[1], synonyms)
    texts = {m.word: CAPTIONS[1][m.start : m.end] for m in mentions}
    assert texts == {"dog": "dog", "cat": "cat", "toilet": "toilet seat"}  # "tree" is no COCO object; seat dropped
    mentions = object_mentions('A "hot dog" beside a baby elephant.', synonyms)
    assert [(m.word, m.start, m.end) for m in mentions] == [("hot dog", 3, 10), ("elephant", 21, 34)]


def test_groups_and_bins():
    assert [token_group(d) for d in (0.26, 0.25, -0.25, -0.2501)] == ["pos", "inv", "inv", "neg"]
    assert [dependence_bin(d) for d in (-1.0, -0.95, -0.9, 0.0, 0.3, 0.9999, 1.0)] == [0, 0, 1, 10, 13, 19, 19]


def _token(group: str) -> dict:
    return {"text": "x", "d": {"pos": 0.5, "inv": 0.0, "neg": -0.5}[group], "group": group}


def test_distance_shares_on_a_constructed_caption():
    #            0      1      2      3      4      5      6      7
    groups = ["neg", "pos", "inv", "inv", "inv", "inv", "pos", "neg"]
    caption = {
        "tokens": [_token(g) for g in groups],
        "mentions": [
            {"hallucinated": True, "tokens": [3, 5]},  # own tokens 3, 4: k=1 -> {2, 5} inv; k=2 -> + {1, 6} pos;
            {"hallucinated": True, "tokens": [7, 8]},  # k=1 -> {6} pos; k=2 -> + {5} inv; none after it
            {"hallucinated": False, "tokens": [0, 1]},  # grounded: not counted
            {"hallucinated": True, "tokens": None},  # unmapped: not counted
        ],
    }
    shares = distance_shares([caption], max_distance=4)
    assert shares["mentions"] == 2 and shares["k"] == [1, 2, 3, 4]
    # mention 1: neg first within k=3 (token 0 at distance 3; token 7 at distance 3 after 4) -> k>=3
    # mention 2: neg never (token 0 is 7 away)
    assert shares["inv"] == [0.5, 1.0, 1.0, 1.0]
    assert shares["pos"] == [0.5, 1.0, 1.0, 1.0]
    assert shares["neg"] == [0.0, 0.0, 0.5, 0.5]
    totals = dependence_totals([caption])
    assert totals["object_tokens_by_group"]["hallucinated"] == {"pos": 0, "inv": 2, "neg": 1}
    assert totals["object_tokens_by_group"]["grounded"] == {"pos": 0, "inv": 0, "neg": 1}
    assert (
        totals["object_tokens_by_bin"]["hallucinated"][10] == 2
        and totals["object_tokens_by_bin"]["hallucinated"][5] == 1
    )
    assert totals["mentions"] == {"grounded": 1, "hallucinated": 3} and totals["unmapped_mentions"] == 1


def _hand_dependence(model, processor, adapter, image_path, caption, index, seed, step=900):
    """d of every supervised target by hand: two teacher-forced passes, the noise drawn as the filter draws it."""
    from PIL import Image

    messages = [{"role": "user", "content": "<image>\n" + PROMPT}, {"role": "assistant", "content": caption}]
    image = Image.open(image_path).convert("RGB")
    example = adapter.encode(messages, processor, adapter.num_image_tokens(processor, image.size))[0]
    pixels = adapter.image_inputs(processor, [image])["pixel_values"]
    noise = torch.randn(pixels.shape, generator=sample_generator(seed, index), dtype=torch.float32)
    ids, labels = torch.tensor([example.input_ids]), torch.tensor([example.labels])
    with torch.no_grad():
        clean = target_logprobs(model(input_ids=ids, pixel_values=pixels).logits, labels)
        noised = add_diffusion_noise(pixels, step, noise=noise)
        noisy = target_logprobs(model(input_ids=ids, pixel_values=noised).logits, labels)
    d = visual_dependence(clean, noisy)[0]
    positions = [p for p, label in enumerate(example.labels) if label != -100 and not example.end_of_turn_mask[p]]
    return [d[p].item() for p in positions], [example.labels[p] for p in positions]


def test_caption_d_equals_two_teacher_forced_passes_and_spans_decode(demo_model):
    root, model, processor, names = demo_model
    adapter = get_adapter(model)
    result = analyze_dependence(
        model, processor, _captions(names), GROUND_TRUTH, image_folder=root / "images", seed=7, batch_size=2
    )
    assert result["errors"] == [] and len(result["captions"]) == 3
    tokenizer = processor.tokenizer
    for index, entry in enumerate(result["captions"]):
        d, ids = _hand_dependence(model, processor, adapter, root / "images" / names[index], CAPTIONS[index], index, 7)
        assert [t["d"] for t in entry["tokens"]] == pytest.approx(d, abs=1e-6)
        assert "".join(t["text"] for t in entry["tokens"]).strip() == CAPTIONS[index]
        assert [t["text"] for t in entry["tokens"]] == [tokenizer.decode([i]) for i in ids]
        for mention in entry["mentions"]:
            first, stop = mention["tokens"]
            spelled = tokenizer.decode(ids[first:stop]).strip()
            assert spelled == mention["text"] == CAPTIONS[index][slice(*mention["chars"])]
    mentions = {(m["word"], m["hallucinated"]) for m in result["captions"][0]["mentions"]}
    assert mentions == {("cat", False), ("dog", True)}
    assert [m["hallucinated"] for m in result["captions"][1]["mentions"]] == [False, True, False]  # cat absent
    hallucinated = [m for e in result["captions"] for m in e["mentions"] if m["hallucinated"]]
    n_tokens = sum(m["tokens"][1] - m["tokens"][0] for m in hallucinated)
    assert sum(result["totals"]["object_tokens_by_bin"]["hallucinated"]) == n_tokens
    assert result["totals"]["hallucination_distance"]["mentions"] == len(hallucinated)


def test_captions_of_unknown_images_are_errors_not_hallucinations(demo_model):
    root, model, processor, names = demo_model
    truth = {1: {"cat"}, 3: set()}  # image 2 is not in the annotations: CHAIR errs, nothing is all-hallucinated
    result = analyze_dependence(model, processor, _captions(names), truth, image_folder=root / "images")
    assert [e["image_id"] for e in result["captions"]] == [1, 3]
    assert result["errors"] == [
        {"index": 1, "id": names[1], "error": "image id 2 is not in the annotations (CHAIR's ground truth)"}
    ]
    assert result["totals"]["mentions"] == {"grounded": 1, "hallucinated": 2}  # image 1: cat, dog; image 3: apple
    unknown_only = analyze_dependence(model, processor, _captions(names)[1:2], truth, image_folder=root / "images")
    assert unknown_only["captions"] == [] and len(unknown_only["errors"]) == 1


def test_pick_tokens_are_disjoint_extremes():
    d = [0.9, -0.8, 0.05, -0.3, 0.6, 0.0, -0.01, 0.4]
    assert pick_tokens(d, 2) == {"pos": [0, 4], "inv": [5, 6], "neg": [1, 3]}
    assert pick_tokens(d[:4], 2) == {"pos": [0, 2], "inv": [], "neg": [1, 3]}


def test_saliency_equals_hooks_on_one_layer(demo_model):
    root, model, processor, names = demo_model
    adapter = get_adapter(model)
    record = {
        "id": "s0",
        "image": names[0],
        "conversations": [{"from": "human", "value": "<image>\n" + PROMPT}, {"from": "gpt", "value": CAPTIONS[0]}],
    }
    sample = prepare_sample(record, 0, adapter, processor, root / "images", max_length=512, seed=3)
    use_eager_attention(model)
    image_id = adapter.image_token_id(processor)
    result = sample_saliency(
        model, sample, adapter, processor, noise_step=900, top_k=2, image_token_id=image_id, example=True
    )
    assert sorted(t["group"] for t in result["tokens"]) == ["inv", "inv", "neg", "neg", "pos", "pos"]
    ids = torch.tensor([sample["examples"][0].input_ids])
    pixels = sample["image_inputs"]["pixel_values"]
    image = ids[0] == image_id
    layer = 1
    captured = {}

    def hook(module, args, output):
        output[1].retain_grad()
        captured["A"] = output[1]

    attention = model.model.language_model.layers[layer].self_attn
    for token in result["tokens"]:
        t = token["position"]
        handle = attention.register_forward_hook(hook)
        try:
            logits = model(input_ids=ids, pixel_values=pixels).logits
        finally:
            handle.remove()
        loss = torch.nn.functional.cross_entropy(logits[0, t - 1][None], ids[0, t][None])
        loss.backward()
        a = captured["A"]
        row = (a * a.grad)[0, :, t - 1].abs().mean(0)  # (L,): I's row t-1 averaged over heads
        assert token["image"][layer] == pytest.approx(row[:t][image[:t]].mean().item(), rel=1e-5, abs=1e-12)
        assert token["text"][layer] == pytest.approx(row[:t][~image[:t]].mean().item(), rel=1e-5, abs=1e-12)
        assert row[t:].abs().max().item() == 0.0  # causal: nothing flows from later keys
        model.zero_grad(set_to_none=True)
    matrix = torch.tensor(result["example"]["matrix"])
    n = len(result["example"]["tokens"])
    assert matrix.shape == (n, n) and torch.triu(matrix, diagonal=1).abs().max().item() == 0.0
    assert matrix.sum().item() > 0.0


def _coco(root: Path) -> tuple[Path, Path]:
    images = [{"id": k} for k in (1, 2, 3)]
    categories = [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}, {"id": 70, "name": "toilet"}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 17},
        {"id": 2, "image_id": 2, "category_id": 18},
        {"id": 3, "image_id": 2, "category_id": 70},
    ]
    instances, captions = root / "instances.json", root / "captions.json"
    instances.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    refs = [{"id": k, "image_id": k, "caption": "a picture."} for k in (1, 2, 3)]
    captions.write_text(json.dumps({"images": images, "annotations": refs}))
    return instances, captions


def test_analyze_commands_end_to_end_on_the_demo_model(demo_model, tmp_path):
    root, model, processor, names = demo_model
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps(c) + "\n" for c in _captions(names)))
    instances, references = _coco(tmp_path)
    out = tmp_path / "dependence"
    argv = [
        "analyze",
        "dependence",
        "--model",
        str(root / "model"),
        "--captions",
        str(captions),
        "--image-folder",
        str(root / "images"),
        "--instances",
        str(instances),
        "--coco-captions",
        str(references),
        "--output-dir",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--seed",
        "7",
        "--no-progress",
    ]
    assert cli_main(argv) == 0
    written = json.loads((out / "dependence.json").read_text())
    expected = analyze_dependence(
        model, processor, _captions(names), GROUND_TRUTH, image_folder=root / "images", seed=7
    )
    assert written["totals"] == json.loads(json.dumps(expected["totals"]))
    for name in ("objects_by_dependence", "hallucination_distance"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC

    data = tmp_path / "conversations.json"
    data.write_text(
        json.dumps(
            [
                {
                    "id": f"s{k}",
                    "image": name,
                    "conversations": [
                        {"from": "human", "value": "<image>\n" + PROMPT},
                        {"from": "gpt", "value": CAPTIONS[k]},
                        {"from": "human", "value": "More?"},
                        {"from": "gpt", "value": "No."},
                    ],
                }
                for k, name in enumerate(names)
            ]
        )
    )
    out = tmp_path / "saliency"
    argv = [
        "analyze",
        "saliency",
        "--model",
        str(root / "model"),
        "--data",
        str(data),
        "--image-folder",
        str(root / "images"),
        "--samples",
        "2",
        "--top-k",
        "3",
        "--example",
        "2",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    assert cli_main(argv) == 0
    result = json.loads((out / "saliency.json").read_text())
    chosen = sorted(set(select_samples(3, 2, seed=42)) | {2})  # 2 drawn at random (default seed 42), the example
    assert [s["index"] for s in result["samples"]] == chosen and result["errors"] == []
    assert result["counts"] == dict.fromkeys(("pos", "inv", "neg"), 3 * len(chosen))
    assert result["example"]["index"] == 2 and len(result["example"]["matrix"]) == len(result["example"]["tokens"])
    for group, values in result["layers"].items():
        assert len(values["image"]) == 2  # the model's two layers
        tokens = [t for s in result["samples"] for t in s["tokens"] if t["group"] == group]
        assert values["image"][0] == pytest.approx(sum(t["image"][0] for t in tokens) / len(tokens))
        image, text = values["image"][1], values["text"][1]
        assert values["image_share"][1] == pytest.approx(image / (image + text))
    for name in ("saliency_by_layer", "saliency_example"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
