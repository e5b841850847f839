"""Options every command shares, defined once: the same spelling, the same meaning, the same help text.

`--model`, `--adapter`, `--dtype`, `--device`, `--seed`, `--batch-size`, `--noise-step`, `--output-dir` / `--output`,
`--debug`.
Nothing heavy is imported at module level, so building a parser (and `--help`) stays instant.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vdtrain.errors import InputError
from vdtrain.evaluation.decoding import DecodingOptions
from vdtrain.method.schedule import DEFAULT_NOISE_STEP, MAX_NOISE_STEP

DTYPES = ("auto", "bfloat16", "float16", "float32")
DTYPE_HELP = "weights dtype: auto (bfloat16 on a GPU that supports it, else float32), bfloat16, float16 or float32"
DEVICE_HELP = "auto (the GPU of this process when there is one, else cpu), cpu, cuda or cuda:N"
SEED_HELP = "seed of every random draw the command makes"
# One default for every command's --seed: TrainingArguments' (`vdtrain train`'s), so that `vdtrain filter score`,
# `inspect` and `analyze` draw by default the noise a training run with default settings draws for each sample.
# `DecodingOptions.seed` has the same default; tests/test_cli.py checks all three agree.
DEFAULT_SEED = 42
DEBUG_HELP = "show the full traceback of an error (also: VDTRAIN_DEBUG=1)"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps a description's layout and shows the default of each option that has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default is not None
            and action.nargs != 0  # flags: their name says what they do
            and action.default != argparse.SUPPRESS
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def parser(prog: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """An `ArgumentParser` with vdtrain's formatter and the shared `--debug` flag."""
    result = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter, **kwargs)
    add_debug(result)
    return result


def add_debug(parser: argparse.ArgumentParser) -> None:
    """`--debug` (read by the error boundary in `vdtrain.cli`; listed here so every `--help` shows it)."""
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)


def add_model_options(
    parser: argparse.ArgumentParser | Any, *, adapter: bool = True, device: bool = True, model_help: str | None = None
) -> None:
    """`--model`, `--adapter`, `--dtype` and `--device`."""
    parser.add_argument(
        "--model", required=True, help=model_help or "model directory or hub id (the base model of --adapter)"
    )
    if adapter:
        parser.add_argument("--adapter", default=None, help="LoRA adapter directory, applied on --model unmerged")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)
    if device:
        parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_seed(
    parser: argparse.ArgumentParser | Any,
    what: str,
    *,
    default: int | None = DEFAULT_SEED,
    flag: str = "--seed",
    dest: str | None = None,
) -> None:
    """`--seed`: one meaning and one default everywhere; `what` says which draws this command makes."""
    parser.add_argument(flag, type=int, default=default, dest=dest, help=f"{SEED_HELP} ({what})")


def positive_int(text: str) -> int:
    """argparse type of a count (`--batch-size`, `--limit`): an integer of at least 1, checked when parsed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_batch_size(parser: argparse.ArgumentParser | Any, default: int | None, what: str = "samples") -> None:
    """`--batch-size`: how many samples (prompts) go through the model at once."""
    parser.add_argument("--batch-size", type=positive_int, default=default, help=f"{what} per forward pass")


def noise_step(text: str) -> int:
    """argparse type of `--noise-step`: a step of the diffusion schedule (`vdtrain.method.schedule`), refused as a
    usage error before any model is loaded."""
    try:
        step = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer diffusion step in [0, {MAX_NOISE_STEP}], got {text!r}"
        ) from None
    if not 0 <= step <= MAX_NOISE_STEP:
        raise argparse.ArgumentTypeError(f"the diffusion step must be in [0, {MAX_NOISE_STEP}], got {step}")
    return step


def add_noise_step(parser: argparse.ArgumentParser | Any, default: int = DEFAULT_NOISE_STEP) -> None:
    """`--noise-step`: the diffusion step of the noised image, checked when the command line is parsed."""
    help_text = f"diffusion step of the noised image (0-{MAX_NOISE_STEP})"
    parser.add_argument("--noise-step", type=noise_step, default=default, help=help_text)


def add_decoding_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """The decoding flags of `eval generate` and `eval run` (`defaults` None: `DecodingOptions`' own; `{}` leaves
    them unset, so a protocol config's values stand unless a flag is given)."""
    base = asdict(DecodingOptions()) if defaults is None else dict(defaults)
    group = parser.add_argument_group("decoding (defaults: the protocol config's, else greedy, 512 tokens)")
    flag = group.add_argument
    flag(
        "--decoding",
        choices=("greedy", "vcd"),
        default=base.get("decoding"),
        help="greedy: transformers generate (sampling / beams by the flags below); vcd: visual contrastive decoding",
    )
    flag("--max-new-tokens", type=int, default=base.get("max_new_tokens"), help="most tokens per answer")
    flag("--do-sample", action="store_true", default=base.get("do_sample"), help="sample instead of greedy")
    flag("--temperature", type=float, default=base.get("temperature"), help="sampling temperature")
    flag("--top-p", type=float, default=base.get("top_p"), help="nucleus sampling mass")
    flag("--num-beams", type=int, default=base.get("num_beams"), help="beam search (greedy decoding only)")
    flag("--vcd-alpha", type=float, default=base.get("vcd_alpha"), help="VCD contrast strength (1.0)")
    flag("--vcd-beta", type=float, default=base.get("vcd_beta"), help="VCD plausibility cut-off (0.1)")
    flag("--vcd-noise-step", type=int, default=base.get("vcd_noise_step"), help="VCD diffusion noise step (500)")
    add_seed(group, f"the VCD noise and sampling; {DEFAULT_SEED} when unset", default=base.get("seed"))
    add_batch_size(group, 8 if defaults is None else defaults.get("batch_size"), "prompts (8 when unset)")


def decoding_options(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> DecodingOptions:
    """`DecodingOptions` from `base` (a config's values) overridden by the flags that were given."""
    values = dict(base or {})
    for name in asdict(DecodingOptions()):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return DecodingOptions(**values)


def add_teacher_forcing_options(parser: argparse.ArgumentParser) -> None:
    """The model options every analysis shares, plus the noise and the sequence length of the teacher forcing."""
    add_model_options(parser)
    add_seed(parser, "the per-sample noise: sample i draws from (seed, i)")
    add_noise_step(parser)
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per sequence after image expansion")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to `flag` in `argv` (`--flag value` or `--flag=value`; the last one wins), for the Ctrl-C
    line that names what was kept; None when it is not there."""
    value = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(f"{flag}="):
            value = arg.partition("=")[2]
    return value


def resolve_dtype(dtype: str, device: str = "auto") -> str:
    """`auto` as one rule for every command: bfloat16 on a CUDA device that supports it, else float32."""
    if dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    import torch

    on_gpu = torch.cuda.is_available() and not str(device).startswith("cpu")
    return "bfloat16" if on_gpu and torch.cuda.is_bf16_supported() else "float32"


def resolve_device(device: str = "auto") -> Any:
    """`auto`: `cuda:LOCAL_RANK` when there is a GPU (one per launched process), else cpu; else as given."""
    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise InputError(f"--device {device!r}: {error}; use {DEVICE_HELP}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here; use --device cpu")
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return resolved


def check_model_path(path: str | os.PathLike, flag: str = "--model") -> str:
    """Refuse a local-looking path that does not exist (transformers would read it as a malformed hub id)."""
    text = str(path)
    local = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text
    if local and not Path(text).expanduser().exists():
        raise InputError(f"{flag} {text}: no such directory; give a model directory or a hub id such as org/name")
    return text


def check_adapter_path(path: str | os.PathLike | None, flag: str = "--adapter") -> str | None:
    """An adapter is a local directory with `adapter_config.json`."""
    if path is None:
        return None
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{flag} {folder}: no such directory")
    if not (folder / "adapter_config.json").is_file():
        raise InputError(f"{flag} {folder}: no adapter_config.json there; is this a LoRA adapter directory?")
    from vdtrain.training.checkpoints import adapter_problems, complete_checkpoints

    problems = adapter_problems(folder)
    if problems:
        complete = complete_checkpoints(folder) or complete_checkpoints(folder.parent)
        hint = f"; {complete[-1]} is complete" if complete else ""
        raise InputError(f"{flag} {folder}: the adapter is incomplete or damaged: {'; '.join(problems)}{hint}")
    return str(folder)


def load_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """`(model, processor, adapter)` for inference from `--model/--adapter/--dtype/--device`, on its device."""
    from vdtrain.models.loading import load_for_inference
    from vdtrain.models.merge import base_model_source

    device = resolve_device(getattr(args, "device", "auto"))
    dtype = resolve_dtype(args.dtype, str(device))
    model_path, adapter_path = model_and_adapter(args.model, getattr(args, "adapter", None))
    source = base_model_source(adapter_path)[1] if adapter_path and adapter_path == str(args.model) else None
    try:
        model, processor, adapter = load_for_inference(model_path, adapter_path, dtype=dtype)
    except (OSError, ValueError) as error:
        if source is None:
            raise
        reason = " ".join(str(error).split())
        raise InputError(f"base model {model_path} (named in {source}) could not be loaded: {reason}") from error
    return model.to(device), processor, adapter


def model_and_adapter(model: str, adapter: str | None) -> tuple[str, str | None]:
    """`--model` and `--adapter` as paths to load; `--model` may be any folder `vdtrain train` writes: a LoRA
    adapter folder (no `config.json`) is loaded on the base model it names."""
    folder = Path(model)
    if adapter is None and (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        from vdtrain.models.merge import base_model_of

        return check_model_path(base_model_of(folder), "the adapter's base model"), check_adapter_path(
            model, "--model"
        )
    return check_model_path(model), check_adapter_path(adapter)
