"""What a demo run is: its variants, its sizes (`DemoSettings`), the picklable `Context` every job gets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vdtrain.demo.data import DemoConfig, DemoPaths
from vdtrain.demo.model import DemoModelConfig
from vdtrain.demo.shapes import CLASSES

# vd_start=1.0: the no-grad noisy forward never runs (VDTrainer runs it from vd_start on even for scheme "none").
VARIANTS: dict[str, dict[str, Any]] = {
    "mle": {"vd_weighting": "none", "vd_temperature": 0.0, "vd_start": 1.0},
    "vd-neg": {"vd_weighting": "neg", "vd_start": 0.5},
    "vd-pos": {"vd_weighting": "pos", "vd_start": 0.5},
    "eos": {"vd_weighting": "none", "vd_temperature": 0.0, "vd_start": 1.0, "vd_eos_selective": True},
}
LENGTH_MATCHED = ("vd-neg", "vd-pos")  # variants the MLE model is length-matched to with an end-of-turn logit bias
EVAL_SPLITS = ("test", "counterfactual")
POPE_VARIANTS = ("random", "popular", "adversarial")
CAPTION_PROMPT = "Describe this image."
CLASS_INDEX = {c.name: k for k, c in enumerate(CLASSES)}


def length_row(variant: str) -> str:
    """Name of the row of the MLE model decoded to the mean caption length of `variant`."""
    return f"mle @ len({variant})"


@dataclass
class DemoSettings:
    """Everything that sizes a demo run; `quick` and default runs differ only here."""

    data: DemoConfig = field(default_factory=lambda: DemoConfig(frac_qa=0.45))  # 0.3: yes/no barely learned
    model: DemoModelConfig = field(default_factory=DemoModelConfig)
    seeds: int = 3
    vision_steps: int = 600  # pre-training steps of the vision tower (then frozen)
    steps: int = 1500  # optimizer steps in all; the variants branch off at steps // 2
    batch_size: int = 16
    learning_rate: float = 1e-3
    temperature: float = 1.0  # tau of Eq. 5.5 for vd-neg / vd-pos
    noise_step: int = 900
    caption_images: int | None = None  # images per eval split that get a caption (None: all)
    pope_images: int | None = None  # images per eval split whose POPE questions are asked (None: all)
    max_new_tokens: int = 40
    length_images: int = 48  # captions per bisection step when matching lengths
    length_iters: int = 6
    workers: int = 1
    quick: bool = False


def demo_settings(quick: bool = False) -> DemoSettings:
    """The default run (up to ~20 minutes on 2 idle cores), or the `--quick` pipeline check (about 2 minutes)."""
    if not quick:
        return DemoSettings()
    return DemoSettings(
        data=DemoConfig(n_train=480, n_test=24, n_counterfactual=24, frac_qa=0.45),
        seeds=1,
        vision_steps=200,
        steps=160,
        batch_size=16,
        caption_images=None,
        pope_images=12,
        max_new_tokens=24,
        length_images=12,
        length_iters=2,
        quick=True,
    )


@dataclass
class Context:
    """What every job needs; picklable so worker processes get it as is."""

    root: str
    settings: DemoSettings
    paths: DemoPaths
    ground_truth: dict[str, dict[int, set[str]]]
    nltk_data: str | None
    progress: bool = True

    def run_dir(self, seed: int, name: str) -> Path:
        """`runs/seed<N>/<name>` with a portable folder name (`mle @ len(vd-neg)`: `mle_at_len-vd-neg`)."""
        return Path(self.root) / "runs" / f"seed{seed}" / folder_name(name)


def folder_name(name: str) -> str:
    """A row name as a portable folder name: no spaces, `@` or parentheses (shells and Windows read those)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.replace(" @ ", "_at_")).strip("-")


_PROCESSOR: dict[str, Any] = {}


def load_processor(ctx: Context) -> Any:
    """The demo's processor, saved once by `prepare`; cached per process."""
    if ctx.root not in _PROCESSOR:
        from transformers import LlavaProcessor

        _PROCESSOR[ctx.root] = LlavaProcessor.from_pretrained(Path(ctx.root) / "processor")
    return _PROCESSOR[ctx.root]
