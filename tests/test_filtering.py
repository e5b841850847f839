"""Offline filtering: scores equal a direct computation, ignore batching and processes, resume; selection; report."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from tiny import tiny_llava, write_conversations, write_images

from vdtrain import add_diffusion_noise, target_logprobs, visual_dependence
from vdtrain.cli import main as cli_main
from vdtrain.data import SupervisedDataset, VDDataCollator
from vdtrain.data.samples import approximate_length, sample_generator
from vdtrain.filtering import RunMismatchError, score_dataset, select_dataset, select_removed
from vdtrain.models.loading import load_for_inference

NUM_IMAGES = 6


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A saved tiny LLaVA (sharpened so that d is far from 0), 6 PNGs and 9 records: 6 scorable with images
    (two turns each), 1 text-only, 1 with a missing image, 1 without an assistant turn."""
    root = tmp_path_factory.mktemp("filtering")
    model, processor = tiny_llava()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "multi_modal_projector" in name and name.endswith("weight"):
                param.mul_(4)
            if "lm_head" in name:
                param.mul_(40)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    names = write_images(root / "images", NUM_IMAGES)
    records = write_conversations(root / "data.json", names, turns=2, text_only=1)
    records.append(
        {
            "id": "missing",
            "image": "nope.png",
            "conversations": [{"from": "human", "value": "<image>\nwhat is it?"}, {"from": "gpt", "value": "a cat."}],
        }
    )
    records.append(
        {"id": "no-answer", "image": names[0], "conversations": [{"from": "human", "value": "<image>\nhi"}]}
    )
    (root / "data.json").write_text(json.dumps(records))
    return root


@pytest.fixture(scope="module")
def loaded(workdir):
    return load_for_inference(workdir / "model")


def score(workdir, loaded, out, **kwargs):
    model, processor, adapter = loaded
    kwargs.setdefault("batch_size", 4)
    return score_dataset(
        model,
        processor,
        workdir / "data.json",
        out,
        image_folder=workdir / "images",
        adapter=adapter,
        progress=False,
        **kwargs,
    )


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_scores(a: list[dict], b: list[dict], tol: float) -> None:
    assert [(r["id"], r["index"], r["n_tokens"]) for r in a] == [(r["id"], r["index"], r["n_tokens"]) for r in b]
    for x, y in zip(a, b):
        for key in ("score", "mean", "frac_pos", "frac_neg"):
            assert math.isclose(x[key], y[key], abs_tol=tol), (x, y, key)


def direct_scores(workdir, loaded, seed=42, step=900) -> dict[int, tuple[float, int]]:
    """`index -> (sum d, n)` with the public functions, one sample at a time, full logits."""
    model, processor, adapter = loaded
    records = json.loads((workdir / "data.json").read_text())
    collate = VDDataCollator.for_processor(processor)
    out = {}
    for index, record in enumerate(records[: NUM_IMAGES + 1]):
        item = SupervisedDataset([record], adapter, processor, workdir / "images")[0]
        batch = collate([item])
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            clean = target_logprobs(
                model(**inputs, **{k: batch[k] for k in ("pixel_values",) if k in batch}).logits, batch["labels"]
            )
            if "pixel_values" in batch:
                noised = add_diffusion_noise(batch["pixel_values"], step, generator=sample_generator(seed, index))
                noisy = target_logprobs(model(**inputs, pixel_values=noised).logits, batch["labels"])
            else:
                noisy = clean
        mask = torch.nn.functional.pad(batch["labels"][:, 1:] != -100, (1, 0))
        d = visual_dependence(clean, noisy)[mask]
        out[index] = (d.double().sum().item(), int(mask.sum()), (d > 0.25).sum().item(), (d < -0.25).sum().item())
    return out


def test_scores_equal_direct_computation_and_errors_are_recorded(workdir, loaded, tmp_path):
    summary = score(workdir, loaded, tmp_path / "out")
    scores = rows(tmp_path / "out" / "scores.jsonl")
    assert [r["index"] for r in scores] == list(range(NUM_IMAGES + 1))
    expected = direct_scores(workdir, loaded)
    assert any(abs(total) > 0.5 for total, *_ in expected.values())  # the test model really depends on the image
    for row in scores:
        total, count, pos, neg = expected[row["index"]]
        assert row["n_tokens"] == count
        assert row["score"] == pytest.approx(total, abs=1e-4)  # batch of 4 vs 1: padding float noise
        assert row["mean"] == pytest.approx(total / count, abs=1e-5)
        assert (row["frac_pos"], row["frac_neg"]) == (pos / count, neg / count)
    assert scores[NUM_IMAGES] == {
        "id": "t0",
        "index": NUM_IMAGES,
        "score": 0.0,
        "n_tokens": 7,
        "mean": 0.0,
        "frac_pos": 0.0,
        "frac_neg": 0.0,
    }
    errors = rows(tmp_path / "out" / "errors.jsonl")
    assert [(e["id"], e["index"]) for e in errors] == [("missing", 7), ("no-answer", 8)]
    assert "nope.png" in errors[0]["error"] and "no assistant" in errors[1]["error"]
    assert summary["counts"] == {"scored": 7, "errors": 2}
    assert summary["score_quantiles"]["min"] == min(r["score"] for r in scores)
    assert (tmp_path / "out" / "score_hist.png").stat().st_size > 10_000
    assert not list((tmp_path / "out").glob("*.rank*.jsonl"))


def test_batch_size_does_not_change_scores(workdir, loaded, tmp_path):
    score(workdir, loaded, tmp_path / "b1", batch_size=1)
    score(workdir, loaded, tmp_path / "b4", batch_size=4)
    assert_same_scores(rows(tmp_path / "b1" / "scores.jsonl"), rows(tmp_path / "b4" / "scores.jsonl"), 1e-4)


def test_truncation_that_leaves_nothing_supervised_is_an_error(workdir, loaded, tmp_path):
    assert score(workdir, loaded, tmp_path / "out", max_length=12)["counts"] == {"scored": 0, "errors": 9}
    errors = rows(tmp_path / "out" / "errors.jsonl")
    assert "max_length=12" in errors[0]["error"] and "nothing supervised" in errors[NUM_IMAGES]["error"]


def test_interrupted_run_resumes_without_recomputing(workdir, loaded, tmp_path):
    score(workdir, loaded, tmp_path / "full", batch_size=1)
    out = tmp_path / "resumed"
    assert score(workdir, loaded, out, batch_size=1, stop_after=3) is None  # "killed" after 3 samples
    assert not (out / "scores.jsonl").exists()
    partial = out / "scores.rank0.jsonl"
    first = rows(partial)
    records = json.loads((workdir / "data.json").read_text())
    scorable = {r["index"] for r in rows(tmp_path / "full" / "scores.jsonl")}
    longest_first = sorted(range(len(records)), key=lambda i: -approximate_length(records[i]))  # stable: ties by index
    assert [r["index"] for r in first] == [i for i in longest_first if i in scorable][:3]
    first[1]["score"] = 123.0  # a marker: a recomputed sample would lose it
    torn = next(i for i in longest_first if i in scorable and i not in {r["index"] for r in first})
    partial.write_text("".join(json.dumps(r) + "\n" for r in first) + f'{{"id": "s{torn}", "index": {torn}, "sco')
    score(workdir, loaded, out, batch_size=1)
    resumed, full = rows(out / "scores.jsonl"), rows(tmp_path / "full" / "scores.jsonl")
    marked = next(k for k, r in enumerate(resumed) if r["index"] == first[1]["index"])
    assert resumed[marked]["score"] == 123.0
    resumed[marked]["score"] = full[marked]["score"]
    assert resumed == full  # merged in index order, nothing duplicated, nothing lost
    assert rows(out / "errors.jsonl") == rows(tmp_path / "full" / "errors.jsonl")


def test_rerun_with_other_settings_is_refused(workdir, loaded, tmp_path):
    score(workdir, loaded, tmp_path / "out", stop_after=1)
    with pytest.raises(RunMismatchError, match="noise_step: 900 there, 500 now"):
        score(workdir, loaded, tmp_path / "out", noise_step=500)
    with pytest.raises(RunMismatchError, match="seed"):
        score(workdir, loaded, tmp_path / "out", seed=1)
    model, processor, adapter = loaded
    half = copy.deepcopy(model).to(torch.bfloat16)  # a copy: the module's model stays float32 for other tests
    with pytest.raises(RunMismatchError, match="dtype: 'float32' there, 'bfloat16' now"):  # no mixing bf16 and fp32
        score_dataset(
            half, processor, workdir / "data.json", tmp_path / "out", image_folder=workdir / "images", progress=False
        )
    other = tmp_path / "other.json"
    other.write_text(json.dumps(json.loads((workdir / "data.json").read_text())[:3]))
    with pytest.raises(RunMismatchError, match="data_sha256"):
        score_dataset(model, processor, other, tmp_path / "out", image_folder=workdir / "images", progress=False)


def _two_process_scoring(model_dir: str, data: str, images: str, out: str) -> None:
    torch.set_num_threads(1)  # the fork inherits the parent's busy OpenMP pool: using it would deadlock
    model, processor, adapter = load_for_inference(model_dir)
    score_dataset(model, processor, data, out, image_folder=images, batch_size=1, progress=False)


def test_two_processes_equal_one(workdir, loaded, tmp_path):
    from accelerate import debug_launcher

    score(workdir, loaded, tmp_path / "one", batch_size=1)
    args = (str(workdir / "model"), str(workdir / "data.json"), str(workdir / "images"), str(tmp_path / "two"))
    debug_launcher(_two_process_scoring, args=args, num_processes=2)
    assert not list((tmp_path / "two").glob("*.rank*.jsonl"))
    assert_same_scores(rows(tmp_path / "one" / "scores.jsonl"), rows(tmp_path / "two" / "scores.jsonl"), 1e-5)
    assert rows(tmp_path / "one" / "errors.jsonl") == rows(tmp_path / "two" / "errors.jsonl")


def test_select_removed_by_strategy_with_ties_by_index():
    scores = [{"index": i, "score": s} for i, s in enumerate([0.5, -1.0, 2.0, -1.0, 3.0, 0.0, 2.0, 1.0, 3.0, -2.0])]
    assert select_removed(scores, "lowest", 0.3) == [1, 3, 9]  # -2 (9), then the tie at -1: index 1 and 3
    assert select_removed(scores, "lowest", 0.2) == [1, 9]  # the tie at -1 goes to the lower index
    assert select_removed(scores, "highest", 0.3) == [2, 4, 8]  # 3 (4), 3 (8), then 2.0 at index 2 before 6
    assert select_removed(scores, "highest", 0.0) == []
    picked = select_removed(scores, "random", 0.4, seed=3)
    assert len(picked) == 4 and picked == select_removed(list(reversed(scores)), "random", 0.4, seed=3)
    assert picked != select_removed(scores, "random", 0.4, seed=4)
    with pytest.raises(ValueError, match="fraction"):
        select_removed(scores, "lowest", 1.5)


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_select_keeps_order_and_format(workdir, loaded, tmp_path, fmt):
    records = json.loads((workdir / "data.json").read_text())
    data = tmp_path / f"data.{fmt}"
    data.write_text(json.dumps(records) if fmt == "json" else "".join(json.dumps(r) + "\n" for r in records))
    model, processor, adapter = loaded
    score_dataset(model, processor, data, tmp_path / "out", image_folder=workdir / "images", progress=False)
    scores = rows(tmp_path / "out" / "scores.jsonl")
    order = [r["index"] for r in sorted(scores, key=lambda r: (r["score"], r["index"]))]
    summary = select_dataset(
        tmp_path / "out" / "scores.jsonl", data, tmp_path / f"kept.{fmt}", strategy="lowest", fraction=0.3
    )
    removed = sorted(order[:2])  # 30% of 7 scored samples, rounded
    kept = sorted(set(order) - set(removed))
    text = (tmp_path / f"kept.{fmt}").read_text()
    written = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
    assert written == [records[i] for i in kept]  # errors (indices 7, 8) are left out
    assert json.loads((tmp_path / "removed.json").read_text()) == [records[i] for i in removed]
    assert summary["counts"] == {"scored": 7, "errors": 2, "kept": 5, "removed": 2}
    assert summary["selection"]["cut_score"] == scores[order[1]]["score"]
    words = [sum(len(t["value"].split()) for t in records[i]["conversations"] if t["from"] == "gpt") for i in kept]
    assert summary["lengths"]["kept"]["response_len_words"] == pytest.approx(sum(words) / len(words))


def test_select_refuses_unfinished_scores(workdir, loaded, tmp_path):
    score(workdir, loaded, tmp_path / "out", batch_size=1, stop_after=2)
    (tmp_path / "out" / "scores.rank0.jsonl").rename(tmp_path / "out" / "scores.jsonl")
    with pytest.raises(ValueError, match="covers 2 of the 9 samples"):
        select_dataset(
            tmp_path / "out" / "scores.jsonl",
            workdir / "data.json",
            tmp_path / "kept.json",
            strategy="highest",
            fraction=0.1,
        )


def filter_main(argv: list[str]) -> int:
    return cli_main(["filter", *argv])


def test_cli_run_scores_and_selects(workdir, tmp_path, capsys):
    argv = [
        "run",
        "--model",
        str(workdir / "model"),
        "--data",
        str(workdir / "data.json"),
        "--image-folder",
        str(workdir / "images"),
        "--output-dir",
        str(tmp_path / "out"),
        "--batch-size",
        "3",
        "--no-progress",
        "--strategy",
        "highest",
        "--fraction",
        "0.3",
        "--output",
        str(tmp_path / "kept" / "kept.json"),
    ]
    assert filter_main(argv) == 0
    assert "scored 7, errors 2, kept 5, removed 2" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "kept" / "kept.json").read_text())) == 5
    assert len(json.loads((tmp_path / "kept" / "removed.json").read_text())) == 2
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["model"] == str((workdir / "model").resolve()) and run["noise_step"] == 900
    assert filter_main(["select", "--help"]) == 0
    assert "--fraction" in capsys.readouterr().out


def test_select_refuses_scores_without_a_matching_fingerprint(workdir, loaded, tmp_path, capsys):
    score(workdir, loaded, tmp_path / "out")
    copied = tmp_path / "copied"  # scores.jsonl moved away from its run.json
    copied.mkdir()
    for name in ("scores.jsonl", "errors.jsonl"):
        (copied / name).write_bytes((tmp_path / "out" / name).read_bytes())
    argv = [
        "filter",
        "select",
        "--data",
        str(workdir / "data.json"),
        "--strategy",
        "lowest",
        "--fraction",
        "0.3",
        "--output",
        str(tmp_path / "kept.json"),
    ]
    assert cli_main([*argv, "--scores", str(copied / "scores.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"vdtrain filter select: error: {copied / 'scores.jsonl'}: no run.json") and "--force" in err
    assert "Traceback" not in err and not (tmp_path / "kept.json").exists()
    # another dataset whose ids match (one answer edited): its fingerprint differs
    records = json.loads((workdir / "data.json").read_text())
    records[0]["conversations"][1]["value"] += " edited"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(records))
    other_argv = [*argv[:3], str(other), *argv[4:], "--scores", str(tmp_path / "out" / "scores.jsonl")]
    assert cli_main(other_argv) == 1
    assert "scores another data file than" in capsys.readouterr().err
    assert cli_main([*argv, "--scores", str(copied / "scores.jsonl"), "--force"]) == 0
    assert len(json.loads((tmp_path / "kept.json").read_text())) == 5


def test_a_trl_parquet_folder_scores_as_its_llava_json(workdir, loaded, tmp_path):
    """`filter score` reads what training reads: TRL `messages` + embedded `images` give the JSON's scores."""
    import datasets

    model, processor, adapter = loaded
    records = json.loads((workdir / "data.json").read_text())[: NUM_IMAGES + 1]  # the scorable ones
    (tmp_path / "data.json").write_text(json.dumps(records))
    rows_out = []
    for record in records:
        messages = []
        for turn in record["conversations"]:
            content = [{"type": "text", "text": turn["value"].replace("<image>\n", "")}]
            if "<image>" in turn["value"]:
                content.insert(0, {"type": "image", "text": None})
            messages.append({"role": "user" if turn["from"] == "human" else "assistant", "content": content})
        image = record.get("image")
        images = [{"bytes": (workdir / "images" / image).read_bytes(), "path": None}] if image else []
        rows_out.append({"id": record["id"], "messages": messages, "images": images})
    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    features = datasets.Features(
        id=datasets.Value("string"),
        messages=[{"role": datasets.Value("string"), "content": [part]}],
        images=[datasets.Image()],
    )
    (tmp_path / "trl").mkdir()
    datasets.Dataset.from_list(rows_out, features=features).to_parquet(str(tmp_path / "trl" / "train.parquet"))
    for data, out in ((tmp_path / "data.json", "json"), (tmp_path / "trl", "trl")):
        score_dataset(
            model, processor, data, tmp_path / out, image_folder=workdir / "images", adapter=adapter, progress=False
        )
    assert_same_scores(rows(tmp_path / "json" / "scores.jsonl"), rows(tmp_path / "trl" / "scores.jsonl"), 1e-6)
    assert len(rows(tmp_path / "trl" / "scores.jsonl")) == NUM_IMAGES + 1
    assert json.loads((tmp_path / "trl" / "run.json").read_text())["data"] == str((tmp_path / "trl").resolve())


def test_resume_scores_again_a_row_whose_score_is_not_finite(workdir, loaded, tmp_path, caplog):
    """Earlier versions wrote a NaN score as a scores.jsonl row, and resume counted it as done: such rows are scored
    again (and the merge keeps the new score), while finite rows are kept as they are."""
    out = tmp_path / "out"
    score(workdir, loaded, out, batch_size=1)
    full, earlier = rows(out / "scores.jsonl"), rows(out / "scores.jsonl")
    earlier[0]["score"], earlier[1]["score"], earlier[2]["score"] = float("nan"), float("inf"), 123.0  # 123: a marker
    (out / "scores.jsonl").write_text("".join(json.dumps(row) + "\n" for row in earlier))  # json writes NaN, Infinity
    assert "NaN" in (out / "scores.jsonl").read_text()
    with caplog.at_level("WARNING"):
        score(workdir, loaded, out, batch_size=1)
    assert "2 earlier scores are not finite; scoring those samples again" in caplog.text
    resumed = rows(out / "scores.jsonl")
    assert [row["index"] for row in resumed] == [row["index"] for row in full]
    assert resumed[0] == full[0] and resumed[1] == full[1]  # scored again, exactly as a fresh run scores them
    assert resumed[2]["score"] == 123.0 and resumed[3:] == full[3:]  # finite rows are not recomputed
