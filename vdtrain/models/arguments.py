"""`ModelArguments`: which model to fine-tune and how it is wrapped (LoRA, projector, frozen tower)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelArguments:
    """Which model to fine-tune and how it is wrapped."""

    model_name_or_path: str = field(metadata={"help": "Hub id or local directory of the base model."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype: auto (bfloat16 on a GPU that supports it, else float32), bfloat16, "
            "float16 or float32."
        },
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, eager, flash_attention_2."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Never needed by a supported family."})
    lora: bool = field(default=True, metadata={"help": "Train LoRA adapters on the language model (else full)."})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Regex of modules to wrap (default: the family's language-model linears)."}
    )
    train_projector: bool = field(default=True, metadata={"help": "Train the multimodal projector fully."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Keep the vision tower frozen."})

    def __post_init__(self) -> None:
        if self.lora_r < 1:
            raise ValueError(f"lora_r is a LoRA rank of at least 1, got {self.lora_r}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout is a probability in [0, 1), got {self.lora_dropout}")
