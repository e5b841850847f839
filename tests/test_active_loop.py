"""The active-learning loop: rounds recorded atomically, identical picks after SIGKILL and resume, the file oracle's
round trip, `vdtrain select active` end to end, and the balanced filter on its dominance file."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vdtrain.errors import InputError
from vdtrain.selection.active import (
    STRATEGIES,
    ArrayOracle,
    FileOracle,
    LateFusionLinear,
    Pool,
    run_loop,
)

CLASSES = ("cat", "dog", "bird", "fish")


def synthetic_pool(n: int = 240, seed: int = 0) -> tuple[Pool, list[int]]:
    """A two-modality pool: a weak 'image' (class signal 0.6) and a strong 'text' (2.0) view of 4 classes."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    image = torch.randn(n, 8, generator=g) + 0.6 * torch.nn.functional.one_hot(labels, 8).float()
    text = torch.randn(n, 6, generator=g) + 2.0 * torch.nn.functional.one_hot(labels, 6).float()
    return Pool([f"s{i:03d}" for i in range(n)], {"image": image, "text": text}), labels.tolist()


def run_simulated(output_dir, strategy="bmmal", rounds=3, oracle=None, **kwargs):
    """The loop the tests and the killed child run: 24 initial, 16 per round, 40 held out."""
    pool, labels = synthetic_pool()
    evaluation = (pool.ids[-40:], labels[-40:])
    oracle = oracle or ArrayOracle(labels, pool.ids)
    learner = LateFusionLinear(pool, 4, epochs=60)
    return run_loop(
        pool, learner, strategy, oracle, output_dir, budget=16, rounds=rounds, initial=24, seed=3,
        evaluation=evaluation, **kwargs,
    )  # fmt: skip


class SlowOracle(ArrayOracle):
    """Array labels, but round 2's answer waits (after saying so in a marker file): the moment the test kills."""

    def __init__(self, labels, ids, marker: Path):
        super().__init__(labels, ids)
        self.marker = marker

    def label(self, ids, round_index):
        if round_index == 2:
            self.marker.write_text("asked")
            time.sleep(120)
        return super().label(ids, round_index)


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - {"bmmal"}))
def test_every_strategy_runs_in_the_loop(tmp_path, strategy):
    result = run_simulated(tmp_path / strategy, strategy=strategy, rounds=1)
    assert [len(r["queried"]) for r in result.rounds] == [24, 16]
    assert len(set(result.labelled_ids)) == 40


def test_loop_records_rounds_and_is_deterministic(tmp_path):
    result = run_simulated(tmp_path / "a")
    again = run_simulated(tmp_path / "b")
    assert [r["queried"] for r in result.rounds] == [r["queried"] for r in again.rounds]
    assert [len(r["queried"]) for r in result.rounds] == [24, 16, 16, 16]
    pool, labels = synthetic_pool()
    held_out = set(pool.ids[-40:])
    assert not held_out & set(result.labelled_ids) and len(set(result.labelled_ids)) == 72
    for index, record in enumerate(result.rounds):
        folder = tmp_path / "a" / "rounds" / f"{index:03d}"
        on_disk = json.loads((folder / "round.json").read_text())
        assert on_disk["queried"] == record["queried"]
        assert on_disk["labels"] == [labels[pool.positions([i])[0]] for i in record["queried"]]
        assert on_disk["metrics"]["labelled"] == 24 + 16 * index
        assert 0.25 < on_disk["metrics"]["accuracy"] <= 1.0 and 0 <= on_disk["metrics"]["phi_gap"] <= 1
        assert set(torch.load(folder / "model.pt")) >= {"fusion.weight", "heads.text.weight", "heads.image.weight"}
    assert not (tmp_path / "a" / "pending.json").exists()
    assert result.rounds[-1]["metrics"]["accuracy_text"] > result.rounds[-1]["metrics"]["accuracy_image"]
    with pytest.raises(InputError, match="other settings.*budget"):
        pool, labels = synthetic_pool()
        run_loop(pool, LateFusionLinear(pool, 4), "bmmal", ArrayOracle(labels, pool.ids), tmp_path / "a",
                 budget=8, rounds=3, initial=24, seed=3, evaluation=(pool.ids[-40:], labels[-40:]))  # fmt: skip


def test_loop_resumes_after_sigkill_with_identical_queried_ids(tmp_path):
    reference = run_simulated(tmp_path / "reference")
    killed, marker = tmp_path / "killed", tmp_path / "marker"
    child = (
        "import sys; from pathlib import Path; import test_active_loop as t; "
        "pool, labels = t.synthetic_pool(); "
        f"t.run_simulated(Path({str(killed)!r}), oracle=t.SlowOracle(labels, pool.ids, Path({str(marker)!r})))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    process = subprocess.Popen([sys.executable, "-c", child], env=env)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, "the child loop ended before round 2"
            assert time.monotonic() < deadline, "the child loop never reached round 2"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    done = sorted(p.name for p in (killed / "rounds").iterdir())
    assert done == ["000", "001"] and (killed / "pending.json").is_file()  # killed mid-round 2
    (killed / "rounds" / "002.tmp").mkdir()  # as a kill during a round's write would leave it
    resumed = run_simulated(killed)
    assert [r["queried"] for r in resumed.rounds] == [r["queried"] for r in reference.rounds]
    assert [r["metrics"] for r in resumed.rounds] == [r["metrics"] for r in reference.rounds]
    assert sorted(p.name for p in (killed / "rounds").iterdir()) == ["000", "001", "002", "003"]


def test_file_oracle_round_trip(tmp_path):
    pool, labels = synthetic_pool()
    out = tmp_path / "al"
    oracle = FileOracle(out, CLASSES)
    first = run_simulated(out, strategy="badge", oracle=oracle, rounds=2)
    assert first.rounds == [] and len(first.waiting) == 24
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert [q["id"] for q in queries] == first.waiting and {q["round"] for q in queries} == {0}
    assert run_simulated(out, strategy="badge", oracle=oracle, rounds=2).waiting == first.waiting  # still pending

    def answer(ids):
        with open(out / "labels.jsonl", "a", encoding="utf-8") as handle:
            for i in ids:
                handle.write(json.dumps({"id": i, "label": CLASSES[labels[pool.positions([i])[0]]]}) + "\n")

    answer(first.waiting)
    second = run_simulated(out, strategy="badge", oracle=oracle, rounds=2)
    assert [len(r["queried"]) for r in second.rounds] == [24] and len(second.waiting) == 16
    answer(second.waiting)
    third = run_simulated(out, strategy="badge", oracle=oracle, rounds=2)
    answer(third.waiting)
    final = run_simulated(out, strategy="badge", oracle=oracle, rounds=2)
    assert final.waiting == [] and [len(r["queried"]) for r in final.rounds] == [24, 16, 16]
    simulated = run_simulated(tmp_path / "sim", strategy="badge", rounds=2)
    assert [r["queried"] for r in final.rounds] == [r["queried"] for r in simulated.rounds]
    (out / "labels.jsonl").write_text('{"id": "s000", "label": "cow"}\n')
    with pytest.raises(InputError, match="unknown class 'cow'"):
        FileOracle(out, CLASSES).label(["s000"], 0)


def test_cli_select_active_then_balanced_filter(tmp_path, capsys):
    from vdtrain.cli import main

    pool, labels = synthetic_pool(n=120)
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "image.npy", pool.embeddings["image"].numpy())
    torch.save(pool.embeddings["text"], emb / "text.pt")
    (emb / "ids.json").write_text(json.dumps(pool.ids))
    data = tmp_path / "data.json"
    records = [
        {"id": i, "image": f"{i}.png", "conversations": [{"from": "human", "value": "<image>"}]} for i in pool.ids
    ]
    data.write_text(json.dumps(records))
    out = tmp_path / "al"
    argv = [
        "select", "active", "--embeddings", f"image={emb / 'image.npy'}", "--embeddings", f"text={emb / 'text.pt'}",
        "--ids", str(emb / "ids.json"), "--classes", ",".join(CLASSES), "--strategy", "bmmal", "--initial", "20",
        "--budget", "10", "--rounds", "1", "--output-dir", str(out), "--epochs", "50", "--dominance", str(data),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "label the 20 samples listed in" in capsys.readouterr().out
    with open(out / "labels.jsonl", "w", encoding="utf-8") as handle:  # a complete labels file simulates the oracle
        for sample_id, label in zip(pool.ids, labels):
            handle.write(json.dumps({"id": sample_id, "label": CLASSES[label]}) + "\n")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "round 1: 10 queried" in printed and "done" in printed
    rows = [json.loads(line) for line in (out / "dominance" / "dominance.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(120)) and all(0 <= r["rho"] <= 1 for r in rows)
    assert all(
        abs(r["phi_image"] + r["phi_text"] - 1) < 1e-9 and abs(r["rho"] - abs(r["phi_image"] - r["phi_text"])) < 1e-9
        for r in rows
    )
    kept = tmp_path / "kept.json"
    argv = ["filter", "select", "--strategy", "balanced", "--scores", str(out / "dominance" / "dominance.jsonl"),
            "--data", str(data), "--fraction", "0.25", "--output", str(kept)]  # fmt: skip
    assert main(argv) == 0
    removed = {r["id"] for r in json.loads((tmp_path / "removed.json").read_text())}
    most_dominated = {r["id"] for r in sorted(rows, key=lambda r: (-r["rho"], r["index"]))[:30]}
    assert removed == most_dominated
    assert [r["id"] for r in json.loads(kept.read_text())] == [i for i in pool.ids if i not in removed]
    assert main(["select", "active", *argv[2:3]]) == 2  # usage error
    capsys.readouterr()
    bad = ["filter", "select", "--strategy", "balanced", "--scores", str(out / "dominance" / "dominance.jsonl"),
           "--data", str(tmp_path / "other.json"), "--fraction", "0.1",
           "--output", str(tmp_path / "k2.json")]  # fmt: skip
    (tmp_path / "other.json").write_text(json.dumps(records[:-1]))
    assert main(bad) == 1 and "another data file" in capsys.readouterr().err


def test_example_runs_and_reports_every_round():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    run = subprocess.run(
        [sys.executable, str(root / "examples" / "active_learning.py"), "--rounds", "2"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["round 0", "round 1", "round 2"]
    assert "30 labels" in lines[0] and "90 labels" in lines[2]
    assert lines[3].startswith("next 10 to label by BMMAL:")
    assert len(ast.literal_eval(lines[3].split(":", 1)[1].strip())) == 10


def test_cli_reads_an_embed_directory_and_leaves_out_rows_without_embeddings(tmp_path, capsys):
    from vdtrain.cli import main

    pool, labels = synthetic_pool(n=60)
    emb = tmp_path / "emb"
    emb.mkdir()
    image = pool.embeddings["image"].numpy().copy()
    image[5] = np.nan  # a sample `vdtrain embed` could not embed
    np.save(emb / "image.npy", image)
    np.save(emb / "text.npy", pool.embeddings["text"].numpy())
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": i, "image": f"{i}.png"}) + "\n" for i in pool.ids))
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": i, "label": y}) + "\n" for i, y in zip(pool.ids, labels)))
    argv = ["select", "active", "--embeddings", str(emb), "--ids", str(data), "--num-classes", "4", "--strategy",
            "entropy", "--initial", "60", "--budget", "5", "--rounds", "0", "--output-dir", str(tmp_path / "al"),
            "--labels", str(answers), "--epochs", "5"]  # fmt: skip
    assert main(argv) == 1 and "initial set of 60 is larger than the 59 candidates" in capsys.readouterr().err
    argv[argv.index("60")] = "59"  # 59 samples have embeddings
    assert main(argv) == 0
    queried = json.loads((tmp_path / "al" / "rounds" / "000" / "round.json").read_text())["queried"]
    assert len(queried) == 59 and pool.ids[5] not in queried


def test_lazy_pool_embeds_once_in_batches():
    records = [{"id": f"r{i}", "x": float(i)} for i in range(10)]
    calls = []

    def embed(batch):
        calls.append(len(batch))
        return {"a": [[r["x"], 1.0] for r in batch], "b": np.array([[2 * r["x"]] for r in batch])}

    pool = Pool.from_records(records, embed, batch_size=4)
    assert calls == [] and pool.ids == [f"r{i}" for i in range(10)]
    assert pool.modalities == ["a", "b"] and calls == [4, 4, 2]
    torch.testing.assert_close(pool.features([3, 7])["b"], torch.tensor([[6.0], [14.0]]))
    assert calls == [4, 4, 2]  # computed once
    with pytest.raises(InputError, match="do not match the 3 pool ids"):
        Pool(["a", "b", "c"], {"m": torch.zeros(2, 4)})
    with pytest.raises(InputError, match="'x' appears more than once"):
        Pool(["x", "y", "x"], {"m": torch.zeros(3, 4)})


def test_ccma_in_the_loop_and_from_the_cli(tmp_path, capsys):
    from vdtrain.cli import main
    from vdtrain.selection.active import CCMA

    pool, labels = synthetic_pool()
    g = torch.Generator().manual_seed(9)
    teacher = (3.0 * torch.nn.functional.one_hot(torch.tensor(labels), 4) + torch.randn(240, 4, generator=g)).softmax(
        1
    )
    strategy = CCMA(teacher, alpha=0.2, student="image", kappa=3)
    result = run_simulated(tmp_path / "loop", strategy=strategy, rounds=2, strategy_name="ccma")
    assert [len(r["queried"]) for r in result.rounds] == [24, 16, 16] and len(set(result.labelled_ids)) == 56
    assert json.loads((tmp_path / "loop" / "run.json").read_text())["strategy"] == "ccma"
    np.save(tmp_path / "image.npy", pool.embeddings["image"].numpy())
    np.save(tmp_path / "text.npy", pool.embeddings["text"].numpy())
    np.save(tmp_path / "teacher.npy", teacher.numpy())
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": str(i), "label": y}) + "\n" for i, y in enumerate(labels)))
    argv = ["select", "active", "--embeddings", str(tmp_path), "--num-classes", "4", "--strategy", "ccma",
            "--student", "image", "--ccma-mode", "target-size", "--initial", "20", "--budget", "8", "--rounds", "1",
            "--output-dir", str(tmp_path / "cli"), "--labels", str(answers), "--epochs", "20"]  # fmt: skip
    assert main(argv) == 2 and "--teacher-probs" in capsys.readouterr().err
    assert main([*argv, "--teacher-probs", str(tmp_path / "teacher.npy")]) == 0
    assert "round 1: 8 queried" in capsys.readouterr().out


def test_cli_ccma_with_a_zero_shot_clip_teacher_equals_its_probabilities(tmp_path, capsys):
    from PIL import Image
    from tiny import tiny_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from vdtrain.cli import main
    from vdtrain.selection.active.teacher import ZeroShotTeacher

    tokenizer = tiny_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=32, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config={**vision, "patch_size": 8}, projection_dim=16))
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    classes = ["cat", "dog", "tree"]
    images = [
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (32, 32, 3), dtype=np.uint8)) for i in range(40)
    ]
    teacher = ZeroShotTeacher(model, processor, classes)
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "image.npy", teacher.image_embeddings(images).numpy())  # as `vdtrain embed --encoder` writes
    np.save(emb / "text.npy", np.random.RandomState(0).randn(40, 5).astype(np.float32))
    np.save(tmp_path / "teacher.npy", teacher.probs(images).numpy())
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": str(i), "label": classes[i % 3]}) + "\n" for i in range(40)))
    argv = ["select", "active", "--embeddings", str(emb), "--classes", ",".join(classes), "--strategy", "ccma",
            "--ccma-mode", "target-size", "--student", "image", "--initial", "9", "--budget", "6", "--rounds", "1",
            "--labels", str(answers), "--epochs", "20"]  # fmt: skip
    assert main([*argv, "--output-dir", str(tmp_path / "a"), "--teacher", str(tmp_path / "clip")]) == 0
    assert main([*argv, "--output-dir", str(tmp_path / "b"), "--teacher-probs", str(tmp_path / "teacher.npy")]) == 0
    picks = [json.loads((tmp_path / d / "rounds" / "001" / "round.json").read_text())["queried"] for d in "ab"]
    assert picks[0] == picks[1] and len(picks[0]) == 6
    capsys.readouterr()
    assert main([*argv, "--output-dir", str(tmp_path / "c")]) == 2 and "--teacher" in capsys.readouterr().err
