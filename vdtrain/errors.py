"""vdtrain's input errors: what the command line prints as one `vdtrain <command>: error: ...` line.

One hierarchy under `InputError`; everything else that reaches the command line (a bug's `ValueError` included) keeps
its traceback. `third_party_input_errors` lists the few other libraries' errors that only bad input raises.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input a user can fix (a file, a sample, an option); the message names the file, the sample and the fix.

    A `ValueError`, so code that caught `ValueError` before keeps working.
    """


class UsageError(InputError):
    """A command line that cannot be parsed (exit code 2, as argparse's own usage errors)."""


class DataError(InputError):
    """A data, question, answer or config file whose content cannot be used; the message names the file."""


class ConversationError(DataError):
    """A sample that cannot become a training example; the message names the sample and what is wrong."""


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed from: missing or damaged files (each one named in the message)."""


class RunMismatchError(InputError):
    """Outputs in a folder that another run (other data, model or settings) wrote; resuming would mix the two."""


class MissingNLTKDataError(InputError, RuntimeError):
    """NLTK resources that CHAIR needs are not installed (a `RuntimeError` too, as it was before)."""


class OutputLockedError(InputError):
    """Another vdtrain process holds the lock of the output folder or file (the message names it and its owner)."""


class StorageError(InputError, OSError):
    """A write that failed for lack of space or permission (ENOSPC, EDQUOT, EROFS, EACCES): names the path."""


class TrainingDiverged(InputError):
    """A non-finite loss, gradient norm or weight: names the step and what went non-finite."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM and Kubernetes send before killing a job), raised as Ctrl-C is: the command says what it
    kept and exits 143."""


def third_party_input_errors() -> tuple[type[BaseException], ...]:
    """Errors of the standard library and other packages that mean bad input, not a bug: files that cannot be read
    or written (`OSError`), a YAML file that does not parse, a damaged safetensors file, a path read as a hub id.

    Imported when called (by the command line's error boundary, after an error), so importing vdtrain stays light.
    """
    import yaml
    from huggingface_hub.errors import HFValidationError
    from safetensors import SafetensorError

    return (OSError, yaml.YAMLError, SafetensorError, HFValidationError)
