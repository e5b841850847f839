"""How answers are decoded (`DecodingOptions`): a plain dataclass, so command lines read its defaults without torch."""

from __future__ import annotations

from dataclasses import dataclass, fields

from vdtrain.errors import InputError


@dataclass
class DecodingOptions:
    """How answers are decoded; part of a run's identity (a resumed run must use the same)."""

    decoding: str = "greedy"  # "greedy": `model.generate` (sampling / beams via the flags below); "vcd"
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 1
    vcd_alpha: float = 1.0
    vcd_beta: float = 0.1
    vcd_noise_step: int = 500
    seed: int = 42  # every command's default seed (vdtrain.commands.options.DEFAULT_SEED, TrainingArguments')

    def __post_init__(self) -> None:
        kinds = {"int": (int, "an integer"), "float": ((int, float), "a number"), "bool": (bool, "true or false")}
        for spec in fields(self):  # a protocol config's YAML value of the wrong type (`max_new_tokens: abc`)
            value, (kind, what) = getattr(self, spec.name), kinds.get(str(spec.type), (str, "text"))
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise InputError(f"{spec.name} must be {what}, got {value!r}")
        for name in ("max_new_tokens", "num_beams"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.decoding not in ("greedy", "vcd"):
            raise InputError(f"decoding must be 'greedy' or 'vcd', got {self.decoding!r}")
        if self.decoding == "vcd" and self.num_beams != 1:
            raise InputError("VCD decodes greedily or by sampling; it does not support --num-beams > 1")
