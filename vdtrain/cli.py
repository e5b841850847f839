"""`vdtrain` command line: dispatches `vdtrain <command> [<subcommand>] ...` to a module's `main(argv)` inside one
error boundary (bad input: one `vdtrain <command>: error: ...` line and exit 1; usage errors exit 2; Ctrl-C: one
line saying what was kept and how to resume, exit 130; `--debug` or `VDTRAIN_DEBUG=1`: the full traceback).

A command is a module with `main(argv: list[str]) -> int` (and optionally `on_interrupt(argv) -> str`, the line
printed on Ctrl-C); it plugs in with one entry in `COMMANDS` and one in `HELP`. Nothing heavy is imported here, so
`vdtrain --help` answers at once.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # `python vdtrain/cli.py`: import vdtrain as a package, never its files as top-level
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

import importlib  # noqa: E402

# command -> module with `main(argv: list[str]) -> int`; a nested mapping is a command group.
COMMANDS: dict[str, str | dict[str, str]] = {
    "train": "vdtrain.commands.train",
    "merge": "vdtrain.commands.merge",
    "filter": "vdtrain.commands.filter",
    "embed": "vdtrain.commands.embed",
    "select": "vdtrain.commands.select",
    "inspect": "vdtrain.commands.inspect",
    "demo": "vdtrain.demo.run",
    "eval": {
        "chair": "vdtrain.commands.eval_chair",
        "pope": "vdtrain.commands.eval_pope",
        "pope-build": "vdtrain.commands.eval_pope_build",
        "generate": "vdtrain.commands.eval_generate",
        "run": "vdtrain.commands.eval_run",
        "mme": "vdtrain.commands.eval_mme",
    },
    "analyze": {
        "dependence": "vdtrain.commands.analyze_dependence",
        "saliency": "vdtrain.commands.analyze_saliency",
    },
}

HELP = {
    "train": "fine-tune a vision-language model with the visual-dependence loss (YAML config + overrides)",
    "merge": "merge a LoRA adapter (and projector) into its base model",
    "filter": "score a dataset by visual dependence and remove a fraction (score | select | run)",
    "embed": "pool a model's hidden states (or a dual encoder's towers) into embeddings for selection",
    "select": "choose what to label or train on: pairs (cold-start, MMCSAL) | active (active learning, BMMAL, CCMA)",
    "inspect": "plot per-token probabilities with the clean and the noised image (thesis Fig. 5.1)",
    "demo": "end-to-end synthetic hallucination benchmark on a tiny model (CPU, minutes)",
    "eval": "evaluation: chair | pope | pope-build | generate | run | mme",
    "chair": "CHAIR object hallucination of captions against COCO annotations",
    "pope": "POPE yes/no probing metrics of answers files",
    "pope-build": "build POPE question sets from COCO instances",
    "generate": "answer a question file with a model (batched, resumable)",
    "run": "a benchmark protocol (eval/*.yaml) end to end: generate, then score",
    "analyze": "the thesis' analysis of a model: dependence (Fig. 5.2, 5.5) | saliency (Fig. 5.3, 5.4)",
    "dependence": "objects of generated captions by visual dependence (thesis Fig. 5.2, 5.5)",
    "saliency": "image and text information flow to each kind of token (Eq. 5.2, Fig. 5.3, 5.4; eager attention)",
    "mme": "score MME answers exactly as the benchmark's calculation.py (perception, cognition)",
}

EXIT_INPUT, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


def _usage(group: dict[str, str | dict[str, str]], prefix: str) -> str:
    lines = [f"usage: {prefix} <command> [options]", "", "commands:"]
    for name in group:
        lines.append(f"  {name:<12} {HELP.get(name, '')}".rstrip())
    lines += ["", f"Run `{prefix} <command> --help` for the options of one command; add --debug (or set"]
    lines.append("VDTRAIN_DEBUG=1) to any command to see the full traceback of an error.")
    return "\n".join(lines)


def _suggestion(name: str, group: dict[str, str | dict[str, str]]) -> str:
    """`; did you mean 'train'?` for a mistyped command (or a subcommand given without its group), else ''."""
    import difflib

    close = difflib.get_close_matches(name, list(group), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    parents = [parent for parent, sub in group.items() if isinstance(sub, dict) and name in sub]
    return f"; did you mean '{parents[0]} {name}'?" if parents else ""


def _debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether `--debug` (bare; `train --debug <mode>` is TrainingArguments') or VDTRAIN_DEBUG asks for tracebacks."""
    rest, debug = [], os.environ.get("VDTRAIN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    for index, arg in enumerate(argv):
        bare = index + 1 == len(argv) or argv[index + 1].startswith("-")
        if arg == "--debug" and bare:
            debug = True
        else:
            rest.append(arg)
    return debug, rest


def _is_input_error(error: BaseException) -> bool:
    """vdtrain's input errors and the library errors bad input causes (not bugs: those keep their traceback)."""
    from vdtrain.errors import InputError

    if isinstance(error, (InputError, ValueError, OSError, ImportError)):
        return True
    name = type(error).__name__
    return name in ("SafetensorError", "YAMLError", "ScannerError", "ParserError", "MissingNLTKDataError")


def _is_storage_error(error: BaseException) -> bool:
    """A write that failed for lack of space or permission (vdtrain's `StorageError` or a bare `OSError`)."""
    import errno

    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def error_message(error: BaseException) -> str:
    """The error's own text, without a DataLoader worker's embedded traceback, with a hint where a library's is
    misleading."""
    text = str(error) or type(error).__name__
    if "Original Traceback (most recent call last)" in text:  # re-raised from a DataLoader worker
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].isidentifier() else last
    if type(error).__name__ == "HFValidationError":
        text += " (a local path that does not exist is read as a hub id: check the path)"
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.filename and not text:
        text = f"{error.filename}: {error.strerror}"
    return text


def _raise_on_sigterm() -> object:
    """SIGTERM (SLURM, Kubernetes) ends a command as Ctrl-C does, with its line saying what was kept (training
    installs its own handler, which saves a checkpoint first); returns the handler to restore, or None."""
    import signal
    import threading

    def terminate(signum: int, frame: object) -> None:
        from vdtrain.errors import Terminated

        raise Terminated("SIGTERM")

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, terminate)


def run_command(prog: str, module_name: str, argv: list[str]) -> int:
    """Run `module_name.main(argv)` inside the error boundary; `prog` (e.g. `vdtrain eval chair`) prefixes messages."""
    from vdtrain.errors import Terminated, UsageError

    debug, argv = _debug_requested(argv)
    module = None
    previous_sigterm = _raise_on_sigterm()
    try:
        module = importlib.import_module(module_name)
        if argv and argv[0] in getattr(module, "SUBCOMMANDS", ()):  # `vdtrain filter select: error: ...`
            prog = f"{prog} {argv[0]}"
        return int(module.main(argv) or 0)
    except KeyboardInterrupt as stop:
        if debug:
            raise
        kept = getattr(module, "on_interrupt", None)
        detail = kept(argv) if kept is not None else "results written so far are kept; rerun the command to go on"
        terminated = isinstance(stop, Terminated)
        print(f"\n{prog}: {'terminated (SIGTERM)' if terminated else 'interrupted'}: {detail}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except SystemExit as stop:  # argparse's usage errors (already printed) and `--help`
        if isinstance(stop.code, str):
            print(f"{prog}: error: {stop.code}", file=sys.stderr)
            return EXIT_USAGE
        return int(stop.code or 0)
    except Exception as error:
        if debug or not _is_input_error(error):
            raise
        message = error_message(error)
        kept = getattr(module, "on_interrupt", None)
        if _is_storage_error(error):  # a full or read-only disk: the path, and what is kept (as Ctrl-C says)
            from vdtrain.io import storage_error

            message = error_message(storage_error(error, getattr(error, "filename", None) or "the output"))
            message += f"; {kept(argv)}" if kept is not None else ""
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, UsageError) else EXIT_INPUT
    finally:
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vdtrain` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    group: dict = COMMANDS
    prefix = "vdtrain"
    while True:
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage(group, prefix), file=sys.stdout if argv else sys.stderr)
            return 0 if argv else EXIT_USAGE
        name = argv.pop(0)
        if name not in group:
            print(f"{prefix}: error: unknown command {name!r}{_suggestion(name, group)}", file=sys.stderr)
            print(f"\n{_usage(group, prefix)}", file=sys.stderr)
            return EXIT_USAGE
        target = group[name]
        prefix = f"{prefix} {name}"
        if isinstance(target, dict):
            group = target
            continue
        return run_command(prefix, target, argv)


if __name__ == "__main__":
    sys.exit(main())
