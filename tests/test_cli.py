"""The command layer: every command's help shows the shared options alike, one error boundary (one line, exit
codes, --debug), Ctrl-C, plug-in commands, and a `vdtrain` that imports no torch until it needs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import vdtrain
from vdtrain.cli import COMMANDS, error_message, main
from vdtrain.commands import options

ROOT = Path(__file__).resolve().parents[1]
# command -> the shared options its help must show
SHARED = {
    ("filter", "score"): ("--model", "--adapter", "--dtype", "--device", "--seed", "--batch-size", "--output-dir"),
    ("filter", "run"): ("--model", "--adapter", "--dtype", "--device", "--seed", "--batch-size", "--output-dir"),
    ("filter", "select"): ("--seed",),
    ("inspect",): ("--model", "--adapter", "--dtype", "--device", "--seed", "--output"),
    ("merge",): ("--model", "--adapter", "--dtype", "--output"),
    ("eval", "generate"): ("--model", "--adapter", "--dtype", "--device", "--seed", "--batch-size", "--output"),
    ("eval", "run"): ("--model", "--adapter", "--dtype", "--device", "--seed", "--batch-size", "--output-dir"),
    ("eval", "chair"): ("--output",),
    ("eval", "pope"): ("--output",),
    ("eval", "pope-build"): ("--seed", "--output-dir"),
}


def _run(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=environment, cwd=cwd)


@pytest.mark.parametrize("command", list(SHARED), ids=" ".join)
def test_help_shows_the_shared_options_alike(command, capsys):
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    for flag in (*SHARED[command], "--debug"):
        assert f"{flag} " in text or f"{flag}\n" in text, (command, flag)
    if "--dtype" in SHARED[command]:
        assert options.DTYPE_HELP in flat  # the same words, so the same meaning
    if "--device" in SHARED[command]:
        assert " ".join(options.DEVICE_HELP.split()) in flat
    if "--seed" in SHARED[command]:
        assert options.SEED_HELP in flat


@pytest.mark.parametrize("command", [c for c in SHARED if "--batch-size" in SHARED[c]], ids=" ".join)
def test_counts_below_one_are_usage_errors_before_any_work(command, capsys):
    """`--batch-size 0` (was "range() arg 3 must not be zero" after loading the model) and `--limit 0`/`-1` (ran
    every question / all but the last) are refused when parsed."""
    argv = {
        ("filter", "score"): ["--model", "m", "--data", "d", "--output-dir", "o"],
        ("filter", "run"): ["--model", "m", "--data", "d", "--output-dir", "o", "--strategy", "lowest"],
        ("eval", "generate"): ["--model", "m", "--questions", "q", "--output", "o"],
        ("eval", "run"): ["--model", "m", "--output-dir", "o"],
    }[command]
    for flag, value in [("--batch-size", "0"), ("--limit", "0"), ("--limit", "-1")]:
        if flag == "--limit" and command[0] != "eval":
            continue
        assert main([*command, *argv, f"{flag}={value}"]) == 2, (flag, value)
        assert f"argument {flag}: must be at least 1, got {value}" in capsys.readouterr().err


def test_train_help_and_every_entry_point(tmp_path):
    cold = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # the packaged copy, else rendered (seconds) and cached
    for args in (["vdtrain/cli.py", "train", "--help"], ["-m", "vdtrain", "train", "--help"]):
        result = _run(*args, env=cold)
        assert result.returncode == 0, result.stderr[-2000:]
        for field in (
            "--output_dir OUTPUT_DIR, --output-dir",
            "--vd_weighting",
            "--lora_r",
            "--dtype",
            "--seed",
            "--resume_from_checkpoint true|last",
            "--model (model_name_or_path)",
        ):
            assert field in result.stdout, field
    from vdtrain.commands.train import HELP_SNAPSHOT, help_key

    packaged = HELP_SNAPSHOT.read_text().partition("\n")[0] == f"# {help_key()}"  # written with this transformers
    cache = tmp_path / "cache" / "vdtrain" / "help"
    assert len(list(cache.iterdir()) if cache.is_dir() else []) == (0 if packaged else 1)
    for args in (["vdtrain/cli.py", "--help"], ["-m", "vdtrain", "--help"], ["vdtrain/cli.py", "eval", "--help"]):
        result = _run(*args)
        assert result.returncode == 0 and "commands:" in result.stdout, result.stderr
    console = Path(sys.executable).with_name("vdtrain")
    if console.is_file():
        result = subprocess.run(
            [str(console), "--help"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        assert result.returncode == 0 and "train" in result.stdout


def test_import_vdtrain_is_lazy():
    code = (
        "import sys, vdtrain, vdtrain.cli, vdtrain.commands.filter, vdtrain.commands.eval_generate\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from vdtrain import VDTrainer, token_weights\n"
        "assert 'torch' in sys.modules and VDTrainer.__name__ == 'VDTrainer'\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert vdtrain.__all__ == [
        "VDLossMixin",
        "VDTrainer",
        "VDTrainingArguments",
        "add_diffusion_noise",
        "load_for_training",
        "register_weighting",
        "target_logprobs",
        "token_weights",
        "visual_dependence",
    ]
    from vdtrain.training.mixin import VDLossMixin
    from vdtrain.training.trainer import VDTrainer

    assert vdtrain.VDTrainer is VDTrainer and "VDTrainer" in dir(vdtrain)
    assert vdtrain.VDLossMixin is VDLossMixin and issubclass(VDTrainer, VDLossMixin)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vdtrain.nope  # noqa: B018


def test_input_errors_are_one_line_with_exit_codes(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "q.jsonl"
    argv = ["eval", "pope", "--questions", str(missing), "--answers", str(missing), "--output", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("vdtrain eval pope: error: ") and str(missing) in err and len(err.splitlines()) == 1
    with pytest.raises(FileNotFoundError):
        main([*argv, "--debug"])
    monkeypatch.setenv("VDTRAIN_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(argv)
    monkeypatch.delenv("VDTRAIN_DEBUG")
    assert main(["eval", "pope", "--output", str(tmp_path / "o")]) == 2  # no --questions: a usage error
    assert "give --questions and --answers in pairs" in capsys.readouterr().err
    assert main(["eval", "pope"]) == 2  # argparse's own usage error
    assert "the following arguments are required: --output" in capsys.readouterr().err
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    argv = ["inspect", "--model", "./no/such/model", "--image", str(image), "--prompt", "p", "--output", "o.png"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "vdtrain inspect: error: --model ./no/such/model: no such directory; give a model directory or a hub id "
        "such as org/name"
    )


def test_a_subprocess_error_has_no_traceback(tmp_path):
    result = _run("-m", "vdtrain", "merge", "--adapter", str(tmp_path), "--output", str(tmp_path / "m"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"vdtrain merge: error: --adapter {tmp_path}: no adapter_config.json there; is this a LoRA adapter directory?"
    )


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise ValueError(f"data.json: sample 's{index}': cannot decode image a.png")


def test_dataloader_worker_errors_lose_their_embedded_traceback():
    loader = torch.utils.data.DataLoader(_Broken(), num_workers=1)
    with pytest.raises(ValueError) as error:
        next(iter(loader))
    assert "Original Traceback" in str(error.value)  # what torch re-raises in the main process
    assert error_message(error.value) == "data.json: sample 's0': cannot decode image a.png"


def test_a_new_command_plugs_in_with_one_entry(tmp_path, capsys, monkeypatch):
    (tmp_path / "hello_command.py").write_text(
        "def main(argv):\n"
        "    if argv == ['--stop']:\n"
        "        raise KeyboardInterrupt\n"
        "    if argv == ['--bad']:\n"
        "        from vdtrain.errors import InputError\n"
        "        raise InputError('x.json: sample 3: no answer; add one')\n"
        "    print('hello', *argv)\n"
        "    return 0\n"
        "def on_interrupt(argv):\n"
        "    return 'half of it is in out/; rerun to finish'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS["eval"], "hello", "hello_command")
    assert main(["eval", "hello", "world"]) == 0 and capsys.readouterr().out == "hello world\n"
    assert main(["eval", "hello", "--bad"]) == 1
    assert capsys.readouterr().err == "vdtrain eval hello: error: x.json: sample 3: no answer; add one\n"
    assert main(["eval", "hello", "--stop"]) == 130
    assert capsys.readouterr().err.strip() == "vdtrain eval hello: interrupted: half of it is in out/; rerun to finish"


def test_only_input_errors_are_one_line_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    """The error boundary prints one line for vdtrain's `InputError` kinds and the explicit third-party tuple (a YAML
    file that does not parse, a missing file); a bug's `ValueError`, or any class that merely shares a third-party
    error's name, propagates with its traceback."""
    (tmp_path / "errors_command.py").write_text(
        "import yaml\n"
        "from vdtrain.errors import ConversationError, MissingNLTKDataError, RunMismatchError\n"
        "class SafetensorError(Exception):\n"
        "    pass\n"
        "def main(argv):\n"
        "    kind = argv[0]\n"
        "    if kind == 'bug':\n"
        "        return int('not a number')\n"
        "    if kind == 'named':\n"
        "        raise SafetensorError('only the name of a third-party error')\n"
        "    if kind == 'yaml':\n"
        "        yaml.safe_load('a: [1')\n"
        "    if kind == 'missing':\n"
        "        open('/no/such/file.json')\n"
        "    raise {'sample': ConversationError, 'run': RunMismatchError, 'nltk': MissingNLTKDataError}[kind](kind)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS["eval"], "errors", "errors_command")
    for kind in ("sample", "run", "nltk", "yaml", "missing"):
        assert main(["eval", "errors", kind]) == 1
        err = capsys.readouterr().err
        assert err.startswith("vdtrain eval errors: error: ") and "Traceback" not in err
    with pytest.raises(ValueError, match="invalid literal for int"):
        main(["eval", "errors", "bug"])
    with pytest.raises(Exception, match="only the name"):
        main(["eval", "errors", "named"])


def test_demo_is_a_command_like_the_others(capsys):
    """`vdtrain demo`'s parser and errors live in the command layer: a bad --steps is a usage error (exit 2) from the
    error boundary, before any data is drawn."""
    assert COMMANDS["demo"] == "vdtrain.commands.demo"
    assert main(["demo", "--steps", "3"]) == 2
    assert capsys.readouterr().err == "vdtrain demo: error: --steps must be an even number >= 2 and --seeds >= 1\n"


def test_pope_build_refuses_image_counts_below_one(capsys):
    argv = ["eval", "pope-build", "--instances", "i.json", "--seed", "0", "--output-dir", "o"]
    for value in ("0", "-3"):  # 0 wrote three empty question files; -3 was random.sample's "or is negative"
        assert main([*argv, "--num-images", value]) == 2
        assert f"argument --num-images: must be at least 1, got {value}" in capsys.readouterr().err


def test_saliency_refuses_counts_below_one(capsys):
    argv = ["analyze", "saliency", "--model", "m", "--data", "d.json", "--output-dir", "o"]
    # --samples 0 / --top-k 0 analysed nothing, then "no sample could be analysed"; -1: random.sample's message
    for flag, value in [("--samples", "0"), ("--samples", "-1"), ("--top-k", "0")]:
        assert main([*argv, flag, value]) == 2
        assert f"argument {flag}: must be at least 1, got {value}" in capsys.readouterr().err


def test_interrupt_lines_read_the_output_in_either_spelling():
    """`--output-dir=out` is as much an output as `--output-dir out` (filter said "nothing was written")."""
    from vdtrain.commands import eval_generate, eval_run, filter

    for argv in (["--output-dir", "out/s"], ["--output-dir=out/s"], ["--data", "d", "--output-dir=out/s"]):
        assert "kept in out/s;" in filter.on_interrupt(["score", *argv])
        assert "kept in out/s/answers;" in eval_run.on_interrupt(argv)
    assert "kept in a.jsonl;" in eval_generate.on_interrupt(["--model", "m", "--output=a.jsonl"])
    assert options.flag_value(["--output", "a", "--output=b"], "--output") == "b"
    assert options.flag_value(["--output"], "--output") is None


def _readme_commands() -> list[list[str]]:
    """Every `vdtrain ...` command line of the README's bash blocks (loops expanded; elided `...` ones left out)."""
    import re
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        text = block.replace("\\\n", " ")
        loop = re.search(r"for (\w+) in ([^;]+); do", text)
        for line in text.splitlines():
            tokens = shlex.split(line, comments=True)
            if "vdtrain" not in tokens or "..." in tokens:
                continue
            argv = tokens[tokens.index("vdtrain") + 1 :]
            values = loop.group(2).split() if loop and f"${loop.group(1)}" in line else [None]
            commands += [[arg.replace(f"${loop.group(1)}", v) if v else arg for arg in argv] for v in values]
    return commands


def test_readme_commands_parse():
    """The README's examples name real commands, real options and real recipe files (models and data are the
    user's: they are not downloaded here)."""
    import importlib

    from vdtrain.commands.train import load_config, parse_overrides

    commands = _readme_commands()
    assert len(commands) >= 12
    for argv in commands:
        if argv[0] == "demo":
            continue
        target = COMMANDS[argv[0]]
        rest = argv[1:]
        if isinstance(target, dict):
            target, rest = target[argv[1]], argv[2:]
        if argv[0] == "train":
            overrides = {**parse_overrides(rest[1:]), "use_cpu": "true"}  # bf16 recipes on a CPU-only machine
            _, _, args = load_config(ROOT / rest[0], overrides)
            assert args.output_dir
            continue
        module = importlib.import_module(target)
        if argv[0] == "filter":
            rest = argv[1:]
        if isinstance(getattr(module, "SUBCOMMANDS", None), dict):  # `vdtrain select <sub>`: the sub's own parser
            module, rest = importlib.import_module(module.SUBCOMMANDS[rest[0]][0]), rest[1:]
        module.build_parser().parse_args(rest)


def test_train_help_snapshot_is_current():
    """The packaged `vdtrain train --help` (read when nothing is cached, so a fresh install's first --help needs no
    transformers import) belongs to the current fields; for the transformers it was written with, it is exactly
    what the parser renders at 80 columns."""
    from importlib.metadata import version

    from vdtrain.commands.train import HELP_SNAPSHOT, HELP_WIDTH, help_key, render_help

    header, _, body = HELP_SNAPSHOT.read_text().partition("\n")
    _, written_with, _, config = header.split()[1:5]
    assert config == help_key().split()[-1], "stale: run python scripts/write_train_help.py"
    if written_with == version("transformers"):
        assert body == render_help(HELP_WIDTH)
    assert "--vd_temperature" in body and "--learning_rate" in body


def test_readme_exit_code_table_is_what_the_cli_returns(tmp_path, monkeypatch, capsys):
    """Every row of the README's exit-code table: its code is one the CLI returns, and each example returns it."""
    import re
    import shlex

    from vdtrain import cli

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|\s*([^|]*?)\s*\|$", readme, re.M)
    codes = {int(code) for code, _, _ in rows}
    assert codes == {0, cli.EXIT_INPUT, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED}, rows
    monkeypatch.chdir(tmp_path)
    examples = [(int(code), command) for code, _, cell in rows for command in re.findall(r"`(vdtrain [^`]+)`", cell)]
    assert {code for code, _ in examples} == {0, cli.EXIT_INPUT, cli.EXIT_USAGE}
    for code, command in examples:
        assert cli.main(shlex.split(command)[1:]) == code, command
    capsys.readouterr()


def test_mistyped_commands_get_a_suggestion(capsys):
    from vdtrain import cli

    assert cli.main(["trian"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[0] == "vdtrain: error: unknown command 'trian'; did you mean 'train'?"
    assert cli.main(["eval", "genrate"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.splitlines()[0]
    assert err == "vdtrain eval: error: unknown command 'genrate'; did you mean 'generate'?"
    assert cli.main(["chair"]) == cli.EXIT_USAGE
    assert "did you mean 'eval chair'?" in capsys.readouterr().err
    assert cli.main(["zzz"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[0] == "vdtrain: error: unknown command 'zzz'"


def test_every_help_answers_without_torch_or_transformers(tmp_path):
    """Every command's `--help`, on a fresh install (no cache) and whatever the installed transformers release: none
    imports torch or transformers (seconds on a quiet machine), so each answers at once."""
    leaves = []
    for name, target in COMMANDS.items():
        leaves += [[name, sub] for sub in target] if isinstance(target, dict) else [[name]]
    code = (
        "import sys\n"
        "from vdtrain.cli import main\n"
        f"for argv in {leaves!r}:\n"
        "    assert main([*argv, '--help']) == 0, argv\n"
        "    heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "    assert not heavy, (argv, heavy)\n"
    )
    result = _run("-c", code, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(leaves) >= 14


def test_train_help_of_another_transformers_release_is_the_packaged_copy_with_a_note(tmp_path):
    """The packaged help was rendered with another transformers release: printed at once, saying so."""
    from vdtrain.commands.train import HELP_SNAPSHOT, help_key

    header, _, body = HELP_SNAPSHOT.read_text().partition("\n")
    other = tmp_path / "train_help.txt"
    other.write_text(f"# transformers 0.0.1 config {help_key().split(' config ')[1]}\n{body}")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from vdtrain.commands.train import help_text\n"
        f"print(help_text(Path({str(other)!r})))\n"
        "assert 'transformers' not in sys.modules\n"
    )
    result = _run("-c", code, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(body.rstrip("\n"))
    assert "Listed with transformers 0.0.1's TrainingArguments; this machine has transformers " in result.stdout


def test_train_help_says_what_resume_and_no_lora_do_here():
    from vdtrain.commands.train import HELP_SNAPSHOT

    flat = " ".join(HELP_SNAPSHOT.read_text().split())
    assert "--no_lora, --no-lora A full fine-tune: train the language model itself instead of LoRA adapters" in flat
    assert "Go on from a checkpoint: a checkpoint-N folder, the run's output_dir, or true/last" in flat
    resume = flat.split("--resume_from_checkpoint RESUME_FROM_CHECKPOINT", 1)[1].split(" --", 2)[1]
    assert "Not directly used by Trainer" not in resume and "Go on from a checkpoint" in resume


def _seed_defaults() -> dict[str, object]:
    """`{"filter score --seed": default, ...}` for every seed option of every command's parser (subcommands too)."""
    import argparse
    import importlib

    def walk(parser: argparse.ArgumentParser, name: str, found: dict[str, object]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{name} {sub}", found)
            for flag in action.option_strings:
                if flag in ("--seed", "--select-seed"):
                    found[f"{name} {flag}"] = None if action.required else action.default

    found: dict[str, object] = {}
    for command, target in COMMANDS.items():
        for sub, module_name in target.items() if isinstance(target, dict) else [("", target)]:
            module = importlib.import_module(module_name)
            name = f"{command} {sub}".strip()
            subcommands = getattr(module, "SUBCOMMANDS", None)
            for extra, (sub_module, _) in subcommands.items() if isinstance(subcommands, dict) else []:
                walk(importlib.import_module(sub_module).build_parser(), f"{name} {extra}", found)
            if hasattr(module, "build_parser"):
                walk(module.build_parser(), name, found)
    return found


def test_every_command_defaults_its_seed_to_the_training_seed():
    """One seed default: what `vdtrain train` (TrainingArguments) uses, so a default `filter score`, `inspect` or
    `analyze` draws the noise a default training run draws for each sample."""
    import dataclasses

    from transformers import TrainingArguments

    from vdtrain.evaluation.decoding import DecodingOptions

    training = {spec.name: spec.default for spec in dataclasses.fields(TrainingArguments)}["seed"]
    assert options.DEFAULT_SEED == training == DecodingOptions().seed == 42
    defaults = _seed_defaults()
    expected = {"filter score --seed", "filter select --seed", "filter run --select-seed", "inspect --seed"}
    expected |= {"analyze dependence --seed", "select pairs --seed", "select active --seed", "embed --seed"}
    assert expected <= set(defaults)
    assert defaults.pop("eval pope-build --seed") is None  # required: a POPE set names the seed it was drawn with
    assert defaults.pop("eval run --seed") is None  # unset: the protocol config's, else DecodingOptions' (42)
    assert defaults == dict.fromkeys(defaults, options.DEFAULT_SEED), defaults


def test_noise_step_bounds_and_default_are_the_schedule_constants():
    """`--noise-step` and `vd_noise_step` accept exactly the steps the diffusion schedule has (no hard-coded 999)."""
    import argparse

    from vdtrain.errors import InputError
    from vdtrain.method.noise import _scheduler
    from vdtrain.method.schedule import DEFAULT_NOISE_STEP, MAX_NOISE_STEP, NUM_TRAIN_TIMESTEPS
    from vdtrain.training.config import VD_DEFAULTS, check_vd_options

    assert len(_scheduler().alphas_cumprod) == NUM_TRAIN_TIMESTEPS == MAX_NOISE_STEP + 1
    assert options.noise_step(str(MAX_NOISE_STEP)) == MAX_NOISE_STEP and options.noise_step("0") == 0
    for bad in (str(NUM_TRAIN_TIMESTEPS), "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match=rf"\[0, {MAX_NOISE_STEP}\]"):
            options.noise_step(bad)
    parser = argparse.ArgumentParser()
    options.add_noise_step(parser)
    assert parser.parse_args([]).noise_step == DEFAULT_NOISE_STEP == VD_DEFAULTS["vd_noise_step"] == 900
    with pytest.raises(InputError, match=rf"vd_noise_step must be in \[0, {MAX_NOISE_STEP}\]"):
        check_vd_options({**VD_DEFAULTS, "vd_noise_step": NUM_TRAIN_TIMESTEPS})
