"""vdtrain's own input errors: what the command line prints as one `vdtrain <command>: error: ...` line."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input a user can fix (a file, a sample, an option); the message names the file, the sample and the fix.

    A `ValueError`, so code that caught `ValueError` before keeps working.
    """


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed from: missing or damaged files (each one named in the message)."""


class UsageError(InputError):
    """A command line that cannot be parsed (exit code 2, as argparse's own usage errors)."""


class OutputLockedError(InputError):
    """Another vdtrain process holds the lock of the output folder or file (the message names it and its owner)."""


class StorageError(InputError, OSError):
    """A write that failed for lack of space or permission (ENOSPC, EDQUOT, EROFS, EACCES): names the path."""


class TrainingDiverged(InputError):
    """A non-finite loss, gradient norm or weight: names the step and what went non-finite."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM and Kubernetes send before killing a job), raised as Ctrl-C is: the command says what it
    kept and exits 143."""
