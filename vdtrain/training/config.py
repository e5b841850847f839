"""Typed configuration: `VDTrainingArguments` (the method's fields) and the model/data/LoRA argument dataclasses."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from vdtrain.data.arguments import DataArguments
from vdtrain.errors import InputError
from vdtrain.method.schedule import DEFAULT_NOISE_STEP, MAX_NOISE_STEP
from vdtrain.models.arguments import ModelArguments

__all__ = [
    "DataArguments",
    "ModelArguments",
    "VDArguments",
    "VDTrainingArguments",
    "upgrade_arguments",
]

CLEAN_PASSES = ("train", "eval")
# old name -> new name; the old names still work, with a FutureWarning (issue 16: method options start with `vd_`)
DEPRECATED_NAMES = {"eos_selective": "vd_eos_selective", "projector_lr": "vd_projector_lr"}


@dataclass
class VDArguments:
    """The visual-dependence fields (thesis Eq. 5.1-5.5), mixed into `TrainingArguments` or TRL's `SFTConfig`.

    Args:
        vd_weighting (`str`, defaults to `"neg"`): weighting scheme; `neg` emphasises image-negative tokens (Eq. 5.3),
            `pos` image-positive ones (Eq. 5.4), `none` keeps the vanilla loss. More via `register_weighting`.
        vd_temperature (`float`, defaults to 0.5): softmax temperature tau of Eq. 5.5; 0 is the vanilla loss.
        vd_start (`float`, defaults to 0.5): fraction of the total optimizer steps after which re-weighting starts.
        vd_noise_step (`int`, defaults to 900): diffusion step of the noised image, in [0, 999].
        vd_eos_min_weight (`float`, defaults to 1.0): floor of the end-of-turn token's weight.
        vd_clean_pass (`str`, defaults to `"train"`): `train` reuses the training forward's logits for p_clean;
            `eval` runs a separate no-grad eval-mode clean pass, as the thesis describes.
        vd_pixel_key (`str`, *optional*): the batch key holding the images; found automatically when unset.
        vd_eos_selective (`bool`, defaults to `False`): the selective EOS supervision baseline (Yue et al. 2024).
        vd_projector_lr (`float`, *optional*): learning rate of the multimodal projector's parameter group.
        vd_masked_logits (`bool`, *optional*): compute logits only at supervised positions on the steps before
            `vd_start` too (same loss, no float32 `(B, L, V)` logits). Unset: on where the host trainer's loss is
            `transformers.Trainer`'s own (as in `VDTrainer`), off for hosts with their own loss (TRL's is fused).
        eos_selective, projector_lr: deprecated names of `vd_eos_selective` and `vd_projector_lr`.
    """

    vd_weighting: str = field(
        default="neg", metadata={"help": "Weighting scheme: 'neg' (Eq. 5.3), 'pos' (Eq. 5.4) or 'none' (vanilla)."}
    )
    vd_temperature: float = field(default=0.5, metadata={"help": "Softmax temperature tau of Eq. 5.5 (0 = vanilla)."})
    vd_start: float = field(
        default=0.5, metadata={"help": "Fraction of total optimizer steps after which the loss is re-weighted."}
    )
    vd_noise_step: int = field(
        default=DEFAULT_NOISE_STEP,
        metadata={"help": f"Diffusion noise step T of the noised image, 0-{MAX_NOISE_STEP}."},
    )
    vd_eos_min_weight: float = field(default=1.0, metadata={"help": "Lower bound of the end-of-turn token weight."})
    vd_clean_pass: str = field(
        default="train",
        metadata={"help": "'train': p_clean from the training forward; 'eval': an extra eval-mode clean pass."},
    )
    vd_pixel_key: str | None = field(
        default=None, metadata={"help": "Batch key of the image tensor (default: found from the batch)."}
    )
    vd_eos_selective: bool = field(
        default=False,
        metadata={
            "help": "Selective EOS supervision baseline: drop the end-of-turn logit where the target is not it."
        },
    )
    vd_projector_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the multimodal projector (default: learning_rate)."}
    )
    vd_masked_logits: bool | None = field(
        default=None,
        metadata={
            "help": "Logits only at supervised positions before vd_start too (same loss, less memory); "
            "default: on for VDTrainer, off for trainers with their own loss."
        },
    )
    eos_selective: bool | None = field(default=None, metadata={"help": "Deprecated: use --vd_eos_selective."})
    projector_lr: float | None = field(default=None, metadata={"help": "Deprecated: use --vd_projector_lr."})

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        for old, new in DEPRECATED_NAMES.items():
            setattr(self, new, resolve_deprecated(old, getattr(self, old), new, getattr(self, new)))
            setattr(self, old, getattr(self, new))  # the old attribute keeps reading right
        self.check_vd_fields()

    def check_vd_fields(self) -> None:
        """Raise on out-of-range `vd_*` values."""
        check_vd_options({name: getattr(self, name) for name in VD_DEFAULTS})


VD_DEFAULTS = {spec.name: spec.default for spec in fields(VDArguments) if spec.name not in DEPRECATED_NAMES}


def resolve_deprecated(old: str, old_value, new: str, new_value):
    """The value of `new` given a value set under its deprecated name `old` (None: not set); warns once per use."""
    if old_value is None or old_value == new_value:
        return new_value
    if new_value != VD_DEFAULTS[new]:
        raise InputError(f"`{old}` (deprecated) and `{new}` are both set, to {old_value!r} and {new_value!r}")
    warnings.warn(f"`{old}` is deprecated and will be removed; use `{new}`", FutureWarning, stacklevel=4)
    return old_value


def vd_options(args) -> dict:
    """The `vd_*` settings of any arguments object (`TrainingArguments`, TRL's `SFTConfig`, a project's own), with
    the documented defaults for the fields it lacks and the deprecated names honoured; checked."""
    options = {}
    for name, default in VD_DEFAULTS.items():
        options[name] = getattr(args, name, default)
    for old, new in DEPRECATED_NAMES.items():
        options[new] = resolve_deprecated(old, getattr(args, old, None), new, options[new])
    check_vd_options(options)
    return options


def check_vd_options(options: dict) -> None:
    """Raise on an out-of-range `vd_*` value, naming the field and its allowed range."""
    from vdtrain.method.weighting import available_weightings

    if options["vd_weighting"] not in available_weightings():
        raise InputError(f"vd_weighting must be one of {available_weightings()}, got {options['vd_weighting']!r}")
    if options["vd_clean_pass"] not in CLEAN_PASSES:
        raise InputError(f"vd_clean_pass must be one of {CLEAN_PASSES}, got {options['vd_clean_pass']!r}")
    if not 0.0 <= options["vd_start"] <= 1.0:
        raise InputError(f"vd_start is a fraction of training in [0, 1], got {options['vd_start']}")
    if not 0 <= options["vd_noise_step"] <= MAX_NOISE_STEP:
        raise InputError(f"vd_noise_step must be in [0, {MAX_NOISE_STEP}], got {options['vd_noise_step']}")
    if options["vd_temperature"] < 0:
        raise InputError(f"vd_temperature must be >= 0, got {options['vd_temperature']}")


@dataclass
class VDTrainingArguments(VDArguments, TrainingArguments):
    """`TrainingArguments` plus the visual-dependence fields of `VDArguments` (thesis Eq. 5.1-5.5).

    Args:
        resume_changed_settings (`bool`, defaults to `False`): resume from a checkpoint saved with other `vd_*`
            settings, model, data file or global batch size (refused otherwise, naming each change).
        skip_nonfinite_steps (`bool`, defaults to `False`): skip an optimizer step whose loss or gradient norm is
            not finite (logged) instead of stopping the run there.
    """

    resume_changed_settings: bool = field(
        default=False,
        metadata={"help": "Resume from a checkpoint saved with other vd_* settings, model, data or global batch."},
    )
    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={"help": "Skip optimizer steps whose loss or gradient norm is not finite instead of stopping."},
    )


def upgrade_arguments(args: TrainingArguments, vd_class: type | None = None) -> TrainingArguments:
    """`args` itself, given the `vd_*` fields: the trainer keeps the very object the user passed, as `Trainer` does
    (`args.max_steps = 2` after construction still counts), and `trainer.args.vd_start` reads the default.

    Its class becomes `vd_class` (`VDTrainingArguments`, or TRL's `VDSFTConfig`) when it is that class's plain base,
    else a subclass of both its own class and `vd_class`, so a project's own fields and methods stay.
    """
    vd_class = vd_class or VDTrainingArguments
    if isinstance(args, VDArguments):
        return args
    options = vd_options(args)
    args.__class__ = vd_class if vd_class.__bases__[-1] is type(args) else _vd_subclass(vd_class, type(args))
    for name, value in options.items():
        setattr(args, name, value)
    for old, new in DEPRECATED_NAMES.items():
        setattr(args, old, options[new])
    return args


_VD_SUBCLASSES: dict[tuple[type, type], type] = {}


def _vd_subclass(vd_class: type, base: type) -> type:
    """`vd_class` mixed into a project's own arguments class (made once per pair; pickled as a rebuild of it)."""
    if (vd_class, base) not in _VD_SUBCLASSES:
        namespace = {"__module__": base.__module__, "__reduce__": _reduce_vd_subclass}
        klass = dataclass(type(f"VD{base.__name__}", (vd_class, base), namespace))
        _VD_SUBCLASSES[(vd_class, base)] = klass
    return _VD_SUBCLASSES[(vd_class, base)]


def _reduce_vd_subclass(self):
    """Pickle support for `_vd_subclass` classes (made at run time, so not importable by name)."""
    vd_class, base = next(pair for pair, klass in _VD_SUBCLASSES.items() if klass is type(self))
    return _rebuild_vd_subclass, (vd_class, base, dict(vars(self)))


def _rebuild_vd_subclass(vd_class: type, base: type, state: dict):
    """The unpickled `_vd_subclass` object: the class made again, the attributes restored."""
    instance = object.__new__(_vd_subclass(vd_class, base))
    instance.__dict__.update(state)
    return instance
