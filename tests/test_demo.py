"""`vdtrain demo`: the quick run end to end through the CLI, and the report's statistics and tables by hand."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vdtrain.demo.intervals import confidence_interval, describe_difference, format_difference
from vdtrain.demo.report import (
    Column,
    format_cell,
    format_table,
    paired_differences,
    summarize,
)
from vdtrain.demo.settings import LENGTH_MATCHED, VARIANTS, length_row

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _numbers(obj):
    """Every int/float in a JSON value."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _numbers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _numbers(value)


REPO = Path(__file__).resolve().parents[1]


def _fresh_machine(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh install: an empty home, no NLTK_DATA, vdtrain from this tree, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NLTK") and k.lower() not in PROXIES}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
# the network cut: every download goes through a proxy that refuses connections (NLTK fetches through proxies only
# when told to)
NETWORK_CUT = {
    "https_proxy": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "NLTK_ALLOW_PROXIED_URLOPEN": "1",
}


def _demo(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`python -m vdtrain demo --quick ...` as a user runs it, in `cwd`."""
    command = [sys.executable, "-m", "vdtrain", "demo", "--quick", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def _nltk_source() -> Path:
    """The NLTK data this machine has (NLTK_DATA: CI points it at ../shared/nltk_data) to pre-place for a user."""
    source = os.environ.get("NLTK_DATA")
    if not source or not (Path(source) / "corpora").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("the fresh-machine demo needs NLTK data in NLTK_DATA to pre-place")
        pytest.skip("no NLTK data in NLTK_DATA to pre-place")
    return Path(source)


@pytest.fixture(scope="module")
def fresh_machine(tmp_path_factory) -> dict:
    """`vdtrain demo --quick` on a fresh machine (empty home, no NLTK_DATA, no ../shared): first with the network cut
    (refused, naming the user's NLTK folder), then with the data placed in that folder as the first-use fetch would
    place it, run to its report; then the same command again (resumed)."""
    source = _nltk_source()
    home, cwd = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("work")
    offline = _demo(cwd, _fresh_machine(home, **NETWORK_CUT))
    folder = Path(re.search(r"into (\S+)\n", offline.stderr).group(1))
    for sub in ("corpora", "taggers", "tokenizers"):
        shutil.copytree(source / sub, folder / sub)
    first = _demo(cwd, _fresh_machine(home, **NETWORK_CUT))
    if first.returncode == 0:
        shutil.copy(cwd / "vdtrain-demo" / "results.json", cwd / "first-results.json")
    again = _demo(cwd, _fresh_machine(home, **NETWORK_CUT))
    return {"home": home, "out": cwd / "vdtrain-demo", "offline": offline, "first": first, "again": again, "cwd": cwd}


@pytest.fixture(scope="module")
def quick_run(fresh_machine) -> Path:
    assert fresh_machine["first"].returncode == 0, fresh_machine["first"].stderr[-3000:]
    return fresh_machine["out"]


def test_fresh_machine_without_network_is_refused_before_any_work(fresh_machine):
    offline, home = fresh_machine["offline"], fresh_machine["home"]
    assert offline.returncode == 1, offline.stderr[-2000:]
    lines = offline.stderr.strip().splitlines()
    assert lines[0] == (
        "vdtrain: fetching NLTK data punkt_tab, averaged_perceptron_tagger_eng, wordnet (first use, ~40 MB) into "
        f"{home / 'nltk_data'}"
    )
    assert lines[-1].startswith("vdtrain demo: error: missing NLTK data: punkt_tab, averaged_perceptron_tagger_eng")
    assert f"fetching it into {home / 'nltk_data'} failed: " in lines[-1] and "Connection refused" in lines[-1]
    assert "python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet" in lines[-1]
    assert len(lines) == 2  # nothing else: no traceback, no NLTK chatter


def test_fresh_machine_with_the_fetched_data_runs_to_its_report(fresh_machine, quick_run):
    first = fresh_machine["first"]
    assert "fetching NLTK data" not in first.stderr  # found in the user's folder: nothing to fetch
    assert "Report: vdtrain-demo/report.md" in first.stdout
    assert (quick_run / "report.md").is_file()


def test_log_without_a_terminal_is_plain_named_lines(fresh_machine, quick_run):
    """Not a TTY: no bars or cursor escapes, one line per finished job, every loss line named by its run, and no
    warning the demo causes itself (vd_start, PEFT/transformers deprecations)."""
    first = fresh_machine["first"]
    log = first.stdout + first.stderr
    assert "\r" not in log and "\x1b[" not in log
    for variant in VARIANTS:
        assert f"[seed0 {variant}] step " in first.stdout
        assert f"variants: train + evaluate: {variant} (seed 0) done" in log
    assert all(line.startswith("[seed0 ") for line in first.stdout.splitlines() if " loss " in line)
    assert "Warning" not in log and "set vd_start: 1.0" not in log
    assert len(log) < 20_000, len(log)


def test_rerun_goes_on_from_the_finished_jobs_and_never_deletes_them(fresh_machine, quick_run):
    again = fresh_machine["again"]
    assert again.returncode == 0, again.stderr[-3000:]
    for line in (
        "MLE to the branch point: 1 of 1 jobs",
        "variants: train + evaluate: 4 of 4 jobs",
        "length-matched MLE: 2 of 2 jobs",
    ):
        assert line + " done by an earlier run, kept" in again.stderr
    first = json.loads((fresh_machine["cwd"] / "first-results.json").read_text())
    results = json.loads((quick_run / "results.json").read_text())
    assert results["runs"] == first["runs"]  # the same finished jobs, not new ones
    assert sorted(p.name for p in (quick_run / "runs" / "seed0").iterdir()) == sorted(
        ["trunk", *VARIANTS, "mle_at_len-vd-neg", "mle_at_len-vd-pos"]
    )


def test_rerun_with_other_settings_is_refused_unless_overwrite(fresh_machine, quick_run, tmp_path):
    env = _fresh_machine(fresh_machine["home"], **NETWORK_CUT)
    other = _demo(fresh_machine["cwd"], env, "--steps", "8", "--output-dir", "vdtrain-demo")
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1] == (
        "vdtrain demo: error: vdtrain-demo holds a demo run with other settings (steps: 160 -> 8): rerun with its "
        "settings to go on, pass --overwrite to replace it, or choose another --output-dir"
    )
    assert (quick_run / "runs" / "seed0" / "vd-neg" / "job.json").is_file()  # untouched


def test_quick_demo_writes_report_results_and_figures(quick_run):
    rows = [*VARIANTS, *(length_row(v) for v in LENGTH_MATCHED)]
    report = (quick_run / "report.md").read_text()
    table_rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")]
    for row in rows:
        assert row in table_rows, row
    assert "Partner" in report and "CHAIR_s" in report and "POPE acc test" in report

    results = json.loads((quick_run / "results.json").read_text())
    assert results["rows"] == rows
    assert set(results["runs"]) == {"0"} and set(results["runs"]["0"]) == set(rows)
    assert all(math.isfinite(x) for x in _numbers(results))
    for variant in VARIANTS:
        metrics = results["runs"]["0"][variant]["metrics"]
        assert 0.0 <= metrics["counterfactual/partner_rate"] <= 1.0
        assert 0.0 <= metrics["test/pope_accuracy"] <= 1.0 and metrics["counterfactual/length"] >= 0.0
    for variant in LENGTH_MATCHED:
        assert "eos_bias" in results["runs"]["0"][length_row(variant)]

    figure = quick_run / "figures" / "metrics.png"
    assert figure.read_bytes()[:8] == PNG_MAGIC
    with Image.open(figure) as image:
        image.verify()
    assert "figures/metrics.png" in report


def test_quick_demo_branches_resume_the_trunk_checkpoint(quick_run):
    settings = json.loads((quick_run / "results.json").read_text())["settings"]
    branch = settings["steps"] // 2
    checkpoint = quick_run / "runs" / "seed0" / "trunk" / f"checkpoint-{branch}"
    trunk = [e for e in json.loads((checkpoint / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    results = json.loads((quick_run / "results.json").read_text())
    for variant in VARIANTS:
        losses = results["runs"]["0"][variant]["training"]["losses"]
        assert branch < losses[0][0] and losses[-1][0] == settings["steps"]
        # Restarting from random weights would put the first loss back near the trunk's first one.
        assert losses[0][1] < trunk[-1]["loss"] + 0.5 * (trunk[0]["loss"] - trunk[-1]["loss"]), variant


RUNS = {
    "0": {"mle": {"a": 0.50, "len": 10.0}, "vd": {"a": 0.40, "len": 9.0}},
    "1": {"mle": {"a": 0.60, "len": 12.0}, "vd": {"a": 0.45, "len": 12.0}},
    "2": {"mle": {"a": 0.70, "len": 11.0}, "vd": {"a": 0.65, "len": 13.5}, "only": {"a": 0.1}},
}


def test_summary_and_paired_differences_by_hand():
    stats = summarize(RUNS)
    mean, std, n = stats["mle"]["a"]
    assert (mean, n) == (pytest.approx(0.6), 3) and std == pytest.approx(0.1)
    assert stats["only"]["a"] == (pytest.approx(0.1), None, 1)
    # per seed vd - mle: a: -0.10, -0.15, -0.05 (mean -0.10, std 0.05); len: -1, 0, 2.5 (mean 0.5, std 1.8028)
    diff = paired_differences(RUNS, [("vd", "mle")])["vd − mle"]
    assert diff["a"][0] == pytest.approx(-0.10) and diff["a"][1] == pytest.approx(0.05) and diff["a"][2] == 3
    assert diff["len"][0] == pytest.approx(0.5) and diff["len"][1] == pytest.approx(1.80278, abs=1e-5)


def test_cells_and_table_format():
    assert format_cell((0.1234, 0.0456, 3)) == "12.3 ± 4.6"
    assert format_cell((-0.1, 0.05, 3), signed=True) == "-10.0 ± 5.0"
    assert format_cell((0.5, 1.8, 3), percent=False, signed=True) == "+0.5 ± 1.8"
    assert format_cell((10.25, None, 1), percent=False) == "10.2"
    assert format_cell(None) == "—"
    table = format_table(summarize(RUNS), [Column("a", "A ↓"), Column("len", "Len", percent=False)], ["mle", "only"])
    assert table.splitlines() == [
        "| variant | A ↓ | Len |",
        "|---|---|---|",
        "| mle | 60.0 ± 10.0 | 11.0 ± 1.0 |",
        "| only | 10.0 | — |",
    ]


def test_quick_demo_reports_the_dependence_analysis_and_intervals(quick_run):
    report = (quick_run / "report.md").read_text()
    assert "## Objects by visual dependence (thesis Fig. 5.2, 5.5)" in report
    assert "failed" not in report.split("## Objects by visual dependence")[1]
    analysis = json.loads((quick_run / "figures" / "analysis" / "dependence.json").read_text())
    totals = analysis["totals"]
    results = json.loads((quick_run / "results.json").read_text())
    assert results["analysis"]["totals"] == totals
    # every mention of every caption is counted once, by its category and CHAIR's ground truth
    mentions = [m for c in analysis["captions"] for m in c["mentions"]]
    assert sum(totals["mentions"].values()) == len(mentions) > 0
    chair = results["runs"]["0"]["mle"]["metrics"]["counterfactual/CHAIRi"]
    assert totals["mentions"]["hallucinated"] / len(mentions) == pytest.approx(chair)
    for name in ("objects_by_dependence", "hallucination_distance"):
        assert (quick_run / "figures" / "analysis" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
        assert f"figures/analysis/{name}.png" in report
    # one seed: the differences carry no interval, and the sentences say nothing can be concluded
    assert "(one seed: no interval, nothing can be concluded)" in report


def test_intervals_and_wording_by_hand():
    # a: -0.10, -0.15, -0.05 -> mean -0.10, std 0.05; t(0.975, 2) = 4.303; half-width 4.303 * 0.05 / sqrt(3)
    diff = paired_differences(RUNS, [("vd", "mle")])["vd − mle"]
    low, high = confidence_interval(diff["a"])
    half = 4.303 * 0.05 / math.sqrt(3)
    assert (low, high) == (pytest.approx(-0.10 - half), pytest.approx(-0.10 + half))
    assert format_difference(diff["a"]) == "-10.0 [-22.4, +2.4]"
    assert describe_difference("vd − mle", "A", diff["a"]) == (
        "`vd − mle`: A -10.0 points (95% interval -22.4 to +2.4 over 3 seeds): no detectable difference."
    )
    clear = (-0.10, 0.01, 3)  # half-width 0.0248: the interval excludes 0
    assert describe_difference("x − y", "A", clear) == (
        "`x − y`: A lower by 10.0 points (95% interval -12.5 to -7.5 over 3 seeds)."
    )
    assert describe_difference("x − y", "Len", (0.5, 0.1, 5), percent=False) == (
        "`x − y`: Len higher by 0.5 words (95% interval +0.4 to +0.6 over 5 seeds)."
    )
    assert confidence_interval((0.1, None, 1)) is None and format_difference((0.1, None, 1)) == "+10.0"
    table = format_table({"vd − mle": diff}, [Column("a", "A")], first="paired", interval=True)
    assert table.splitlines()[-1] == "| vd − mle | -10.0 [-22.4, +2.4] |"


def test_readme_block_from_results():
    from vdtrain.demo.readme import readme_block

    runs = {
        seed: {
            "mle": {"metrics": {"counterfactual/partner_rate": 0.5 + 0.1 * k, "counterfactual/length": 10.0}},
            "vd-pos": {"metrics": {"counterfactual/partner_rate": 0.4 + 0.1 * k, "counterfactual/length": 10.0}},
        }
        for k, seed in enumerate("012")
    }
    results = {
        "setup": {
            "command": "vdtrain demo",
            "date": "2026-12-01 16:00 UTC",
            "wall_time_s": 600.0,
            "machine": "Linux, 2 CPU cores, Python 3.11, torch 2.13.0 (2 threads), transformers 5.24.0",
            "load_start": "1.0/1.0/1.0",
        },
        "settings": {"seeds": 3},
        "rows": ["mle", "vd-pos"],
        "pairs": [["vd-pos", "mle"]],
        "runs": runs,
    }
    block = readme_block(results).splitlines()
    assert block[0].startswith("From a run of `vdtrain demo` (2026-12-01 16:00 UTC, 10.0 min; Linux")
    assert block[0].endswith("at start), 3 seeds, mean ± std; counterfactual split, percent:")
    assert "| mle | 60.0 ± 10.0 | — | — | — | 10.0 ± 0.0 | — |" in block
    # every seed's difference is exactly -10 points: std 0, the interval is the point and excludes 0
    assert block[-1] == (
        "- `vd-pos − mle`: partner rate lower by 10.0 points (95% interval -10.0 to -10.0 over 3 seeds)."
    )


def test_overwrite_clears_only_what_the_demo_wrote(tmp_path):
    from vdtrain.demo.resume import STATE, open_run
    from vdtrain.demo.settings import demo_settings
    from vdtrain.errors import InputError

    (tmp_path / "runs" / "seed0" / "mle").mkdir(parents=True)
    (tmp_path / "report.md").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds an earlier demo run \\(runs, report.md\\) this version cannot resume"):
        open_run(tmp_path, demo_settings(True), overwrite=False)
    assert (tmp_path / "runs" / "seed0" / "mle").is_dir()
    state = open_run(tmp_path, demo_settings(True), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["notes.txt", STATE])
    assert state["settings"]["steps"] == 160 and "workers" not in state["settings"]
    assert open_run(tmp_path, demo_settings(True), overwrite=False) == json.loads((tmp_path / STATE).read_text())
