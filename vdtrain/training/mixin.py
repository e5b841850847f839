"""`VDLossMixin`: the visual-dependence loss (thesis 5.3) in front of any `Trainer` whose loss is the causal-LM NLL.

`class MyTrainer(VDLossMixin, SomeTrainer)` keeps `SomeTrainer`'s loss, metrics and speed before `vd_start`, and from
then on re-weights its per-token loss by each token's visual dependence, at the cost of one no-grad forward per step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from typing import NamedTuple

import torch
from transformers import Trainer
from transformers.utils import logging

from vdtrain.data.dataset import IMAGE_INPUTS
from vdtrain.errors import InputError
from vdtrain.keys import COORDINATE_CHANNELS, END_OF_TURN_MASK, HAS_IMAGE, LOSS_ONLY_KEYS
from vdtrain.method.dependence import dependence_stats_tensor, row_logprobs, visual_dependence
from vdtrain.method.losses import per_token_nll
from vdtrain.method.noise import (
    add_diffusion_noise,
    image_rows,
    keep_coordinates,
    keep_padding,
    noise_scales,
    seeded_generator,
)
from vdtrain.method.passes import (
    auxiliary_loss,
    label_shift,
    no_grad_logprobs,
    supervised_logits,
    supervised_mask,
    supervised_targets,
    targets_at,
    with_decoder_inputs,
)
from vdtrain.method.weighting import token_weights
from vdtrain.models.base import accepts_logits_mask
from vdtrain.training.batches import (
    PIXEL_KEYS,
    check_not_packed,
    check_pixels,
    find_pixel_key,
    has_token_labels,
    image_owners,
    images_per_row,
    rows_with_images,
    vd_applicability,
)
from vdtrain.training.config import vd_options

logger = logging.get_logger(__name__)

VD_METRICS = ("vd_mean", "vd_frac_pos", "vd_frac_neg", "vd_frac_inv", "vd_weight_max")


class StepMasks(NamedTuple):
    """The masks of one training micro-batch, computed once in `compute_loss` and shared by every pass of the step."""

    labels: torch.Tensor  # (B, L), -100 where unsupervised
    supervised: torch.Tensor  # (B, L) bool: `supervised_mask(labels)`
    end_of_turn: torch.Tensor | None  # (B, L) bool: the collator's `end_of_turn_mask`, else labels == end_of_turn_id
    has_image: torch.Tensor | None  # (B,) bool: the collator's `has_image`, else None (found from the batch)
    coordinates: torch.Tensor | None = None  # (B,) long: the collator's `vd_coordinate_channels` (noise keeps them)


class NoisyPass(NamedTuple):
    """What the no-grad passes of an active step measured: `(B, L)` target log-probs, and the `(B,)` image rows."""

    logp_noisy: torch.Tensor
    logp_clean: torch.Tensor | None  # the eval-mode clean pass (`vd_clean_pass="eval"`), else None
    has_image: torch.Tensor | None


class VDLossMixin:
    """Mixin that adds the visual-dependence loss of Eq. 5.5 to a `transformers.Trainer` subclass.

    The host's loss must be the per-token NLL of `labels` (-100 where unsupervised), reduced as `Trainer` reduces it:
    a causal LM's labels are aligned with `input_ids` (HF convention), an encoder-decoder model's
    (`config.is_encoder_decoder`) are the decoder's targets, of their own length (`passes.label_shift`). The batch
    may carry `end_of_turn_mask` (shaped as `labels`) and `has_image` `(B,)` (see `vdtrain.keys`); both are taken out
    before the forward. The `vd_*` settings are read from `args` whatever its class, with the defaults of
    `VDTrainingArguments` for the fields it lacks.

    Override `compute_token_weights` to change how `d` becomes weights; the loss plumbing stays the same.

    Args:
        projector_modules (`tuple[str, ...]`, *optional*): parameter-name fragments of the multimodal projector;
            with `vd_projector_lr` set they get their own optimizer group (the paper's "MM projector LR").
        end_of_turn_id (`int`, *optional*): token closing an assistant turn; needed by `vd_eos_selective`, and
            flags the end-of-turn tokens of the EOS floor when the batch has no `end_of_turn_mask`.
        pixel_key (`str`, *optional*): batch key of the image tensor (the model adapter's); else `vd_pixel_key`,
            else the first of `PIXEL_KEYS` in the batch.
        All other arguments are the host trainer's.
    """

    def __init__(
        self,
        *args,
        projector_modules: tuple[str, ...] = (),
        end_of_turn_id: int | None = None,
        pixel_key: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.vd = SimpleNamespace(**vd_options(self.args))  # read once, at construction
        self.projector_modules = tuple(projector_modules)
        self.end_of_turn_id = end_of_turn_id
        self.pixel_key = pixel_key or self.vd.vd_pixel_key
        self._token_labels, self.vd_off_reason = vd_applicability(self.model, self.pixel_key, self.vd)
        self._shift = label_shift(self.model)  # 1: causal LM, 0: encoder-decoder (labels are the decoder's targets)
        if (self.vd.vd_start < 1.0 and self.vd_off_reason is None) or self.vd.vd_eos_selective:
            # Trainer's own choice: it switches smoothing off where it cannot apply (multi-label classification)
            smoothing = getattr(self, "label_smoother", None)
            for name, value in (("label_smoothing_factor", smoothing), ("compute_loss_func", self.compute_loss_func)):
                if value is not None:
                    raise InputError(f"{name} replaces the per-token loss the VD loss and vd_eos_selective re-weight")
        if self.vd.vd_projector_lr is not None and not self.projector_modules:
            raise InputError(
                f"vd_projector_lr={self.vd.vd_projector_lr} needs {type(self).__name__}(projector_modules=...), the "
                "parameter-name fragments of the multimodal projector: pass **adapter.trainer_kwargs(processor)"
            )
        if self.vd.vd_eos_selective and end_of_turn_id is None:
            raise InputError(
                f"vd_eos_selective=True needs {type(self).__name__}(end_of_turn_id=...) from the model's adapter"
            )
        self._vd_metrics: list[torch.Tensor] = []  # one (5,) device tensor per active micro-batch: VD_METRICS
        self._noise_counter = (-1, -1)  # (global_step, micro-batch index within that step)
        self._logits_mask_ok: bool | None = None
        vanilla_weights = self.vd.vd_weighting == "none" or self.vd.vd_temperature == 0
        if self.vd_off_reason is not None:
            if self.vd.vd_start < 1.0:
                logger.warning(
                    "vdtrain: the VD loss is off for this model: %s. Every step is %s's own loss.",
                    self.vd_off_reason,
                    self._host().__name__,
                )
        elif not vanilla_weights or type(self).compute_token_weights is not VDLossMixin.compute_token_weights:
            signal, noise = noise_scales(self.vd.vd_noise_step)
            logger.info(
                "vdtrain: scheme=%s tau=%s start=%.2f of training, noise step %d (signal x%.3f, noise x%.3f)",
                self.vd.vd_weighting,
                self.vd.vd_temperature,
                self.vd.vd_start,
                self.vd.vd_noise_step,
                signal,
                noise,
            )
        elif self.vd.vd_start < 1.0:
            logger.warning(
                "vdtrain: vd_weighting=none / vd_temperature=0 leave the loss vanilla, but from vd_start=%.2f every "
                "step still runs the noisy forward to log vd_* metrics; set vd_start: 1.0 for a plain MLE run",
                self.vd.vd_start,
            )

    def _host(self) -> type:
        """The first class after the mixins that defines `compute_loss` (the host trainer's loss)."""
        hosts = (klass for klass in type(self).__mro__ if not issubclass(klass, VDLossMixin))
        return next(klass for klass in hosts if "compute_loss" in vars(klass))

    # ------------------------------------------------------------------ hooks a subclass may override
    def compute_token_weights(
        self, d: torch.Tensor, mask: torch.Tensor, end_of_turn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Turn visual dependence `d` `(B, L)` into per-token loss weights `(B, L)` (Eq. 5.3-5.5).

        `mask` marks supervised tokens; weights at other positions are ignored. Override this to try another
        weighting; the default uses `token_weights` with the `vd_*` arguments.
        """
        return token_weights(
            d,
            mask,
            scheme=self.vd.vd_weighting,
            temperature=self.vd.vd_temperature,
            end_of_turn_mask=end_of_turn_mask,
            eos_min_weight=self.vd.vd_eos_min_weight,
        )

    def vd_active(self) -> bool:
        """Whether this optimizer step re-weights; depends on the step count only, so all ranks agree."""
        max_steps = self.state.max_steps or 0
        if self.vd_off_reason is not None or max_steps <= 0:
            return False
        return self.state.global_step >= math.ceil(self.vd.vd_start * max_steps)

    def train(self, *args, **kwargs):
        """The host's `train`, counting micro-batches afresh: a run interrupted mid-step and resumed on the same
        trainer would otherwise key that step's samples after the micro-batches it had already drawn."""
        self._noise_counter = (-1, -1)
        self._vd_metrics.clear()
        return super().train(*args, **kwargs)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The host's loss before `vd_start` (and outside training); the re-weighted loss of Eq. 5.5 after it."""
        inputs = dict(inputs)
        end_of_turn = inputs.pop(END_OF_TURN_MASK, None)
        has_image = inputs.pop(HAS_IMAGE, None)
        coordinates = inputs.pop(COORDINATE_CHANNELS, None)
        training = model.training and self._token_labels and has_token_labels(inputs, aligned=self._shift == 1)
        if model.training and self._token_labels and not training and "labels" in inputs:
            logger.warning_once("vdtrain: a batch whose labels are not per-token takes the host trainer's loss")
        if training and self.vd_off_reason is None:
            check_pixels(model, inputs, has_image, self.pixel_key)
        active = training and self.vd_active()
        if not (active or (training and (self.vd.vd_eos_selective or self._vd_masked_logits(model)))):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if active:
            check_not_packed(inputs)
        labels = inputs["labels"]
        if end_of_turn is None and self.end_of_turn_id is not None:
            end_of_turn = labels == self.end_of_turn_id  # a collator that does not flag them
        end_of_turn = None if end_of_turn is None else end_of_turn.bool()
        masks = StepMasks(labels, supervised_mask(labels, self._shift), end_of_turn, has_image, coordinates)
        return self._vd_loss(model, inputs, masks, active, return_outputs, num_items_in_batch)

    def _vd_masked_logits(self, model) -> bool:
        """Whether the steps before `vd_start` take vdtrain's logits-at-supervised-positions loss (equal value)."""
        if self.vd.vd_masked_logits is not None:
            return self.vd.vd_masked_logits
        return self.vd_off_reason is None and self._host() is Trainer and self._logits_mask(model)

    def _vd_loss(self, model, inputs, masks: StepMasks, active, return_outputs, num_items_in_batch):
        """The loss from logits at the supervised positions only (the lm_head skips every other position)."""
        labels = inputs.pop("labels")
        inputs = with_decoder_inputs(model, inputs, labels)  # what an encoder-decoder model builds from `labels`
        noisy = self._noisy_pass(model, inputs, masks) if active else None  # before the graph is built
        targets = supervised_targets(labels, self._shift)  # (N,), row-major like the logits rows
        at = targets_at(labels, self._shift)
        logits, outputs = supervised_logits(model, inputs, at, self._logits_mask(model))  # (N, V)
        eos_id = self.end_of_turn_id if self.vd.vd_eos_selective else None
        nll = per_token_nll(logits, targets, eos_id=eos_id)  # (N,)

        weights = torch.ones_like(nll)
        if noisy is not None:  # log p_clean of the training forward: over the full softmax, even if the loss drops EOS
            logp_clean = -nll.detach() if eos_id is None else row_logprobs(logits.detach(), targets)
            weights = self._visual_dependence_weights(noisy, masks, logp_clean)[masks.supervised]

        denom = num_items_in_batch if num_items_in_batch is not None else masks.supervised.sum().clamp_min(1)
        loss = (nll * weights).sum() / denom
        aux = auxiliary_loss(model, outputs)  # a mixture of experts' load balancing, as the model adds it to its loss
        if aux is not None:
            loss = loss + aux.to(loss.device)
        averaged = self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs
        if averaged and num_items_in_batch is not None:
            # as the base compute_loss: tensor-parallel ranks share a batch; DataParallel averages over n_gpu
            scale = self.accelerator.num_processes // (self.get_tp_size() if hasattr(self, "get_tp_size") else 1)
            loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss

    def _noisy_pass(self, model, inputs, masks: StepMasks) -> NoisyPass:
        """The no-grad forward on diffusion-noised images (and the eval clean pass if asked), run before the
        training forward so that its activations are freed before the training graph holds its own."""
        first = self._first_position()  # every active micro-batch advances the count, text-only ones too
        images_per_row = self._images_per_row(model, inputs)
        has_image = masks.has_image
        if has_image is None:  # a collator of the user's own: find the image rows from the config's image token
            has_image = rows_with_images(model, inputs, images_per_row)
        pixel_key = self._pixel_key(inputs, has_image)
        noisy_inputs = dict(inputs)
        if pixel_key is not None:
            pixels = inputs[pixel_key]
            sizes = image_rows(inputs, pixels)
            noise = self._draw_noise(pixels, self._image_owners(has_image, images_per_row, len(sizes)), sizes, first)
            noised = keep_padding(pixels, add_diffusion_noise(pixels, self.vd.vd_noise_step, noise=noise))
            noisy_inputs[pixel_key] = keep_coordinates(pixels, noised, masks.coordinates)
        logp_noisy = self._no_grad_logprobs(model, noisy_inputs, masks)
        logp_clean = self._no_grad_logprobs(model, inputs, masks) if self.vd.vd_clean_pass == "eval" else None
        return NoisyPass(logp_noisy, logp_clean, has_image)

    def _visual_dependence_weights(
        self, noisy: NoisyPass, masks: StepMasks, logp_clean_flat: torch.Tensor
    ) -> torch.Tensor:
        """`(B, L)` detached weights from `d` of Eq. 5.1; `logp_clean_flat` `(N,)` holds log p_clean of the training
        forward at the supervised positions in row-major order (unused when the eval clean pass ran)."""
        supervised = masks.supervised
        logp_clean = noisy.logp_clean
        if logp_clean is None:
            logp_clean = torch.zeros_like(noisy.logp_noisy)
            logp_clean[supervised] = logp_clean_flat.to(logp_clean.dtype)
        d = visual_dependence(logp_clean, noisy.logp_noisy) * supervised
        if noisy.has_image is not None:
            d = d * noisy.has_image.to(d.device)[:, None]  # text-only samples: d = 0, weight 1
        weights = self.compute_token_weights(d, supervised, masks.end_of_turn)
        self._record(d, supervised, weights)
        return weights.detach()

    def _no_grad_logprobs(self, model, inputs, masks: StepMasks) -> torch.Tensor:
        """`(B, L)` target log-probs from one no-grad forward in eval mode (no dropout, no checkpointing)."""
        out = torch.zeros(masks.labels.shape, dtype=torch.float32, device=masks.labels.device)
        out[masks.supervised] = no_grad_logprobs(model, inputs, masks.labels, self._logits_mask(model), self._shift)
        return out

    def _logits_mask(self, model) -> bool:
        """Whether the model's forward takes a boolean `logits_to_keep` (transformers 5 models do)."""
        if self._logits_mask_ok is None:
            self._logits_mask_ok = accepts_logits_mask(model)
        return self._logits_mask_ok

    # ------------------------------------------------------------------ noise and images
    def _first_position(self) -> int:
        """The global position of this micro-batch's first sample: `(micro_batch * world_size + process_index) *
        batch`, the order in which accelerate shards batches; counts every active micro-batch of the step."""
        step = self.state.global_step
        micro = self._noise_counter[1] + 1 if self._noise_counter[0] == step else 0
        self._noise_counter = (step, micro)
        rows = self._train_batch_size  # per_device_train_batch_size, or what auto_find_batch_size settled on
        if self.accelerator.split_batches:  # the processes share one batch of that size, `rows / world_size` each
            rows //= self.args.world_size
        return (micro * self.args.world_size + self.args.process_index) * rows

    def _draw_noise(
        self, pixels: torch.Tensor, owners: list[int] | None, sizes: list[int], first: int
    ) -> torch.Tensor:
        """eps for `pixels`, one generator per image seeded from (seed, global_step, the sample's global position).

        `first` is the micro-batch's first global position (`_first_position`), so 1 process x batch 4, 2 processes x
        batch 2 and batch 2 x accumulation 2 all draw the same noise for the same sample, and a resumed run draws what
        the first run drew. `sizes` are the leading rows of `pixels` per image (`image_rows`), `owners` the batch row
        of each image (`_image_owners`); the second and later images of a sample get keys of their own. When the
        images cannot be matched to their rows, one draw covers the micro-batch.
        """
        step = self.state.global_step
        if owners is not None and len(owners) == len(sizes):
            draws, seen = [], defaultdict(int)
            for row, size in zip(owners, sizes):
                index, seen[row] = seen[row], seen[row] + 1
                key = first + row if index == 0 else f"{first + row}.{index}"
                draws.append(self._randn((size, *pixels.shape[1:]), step, key, pixels.device))
            return torch.cat(draws)
        return self._randn(pixels.shape, step, f"micro{first}", pixels.device)

    _image_owners = staticmethod(image_owners)

    def _randn(self, shape: torch.Size, step: int, key: int | str, device: torch.device) -> torch.Tensor:
        generator = seeded_generator(self.args.seed, step, key, device=device)
        return torch.randn(shape, generator=generator, device=device)

    def _images_per_row(self, model, inputs: dict) -> torch.Tensor | None:
        """`(B,)` images per row of the batch (`batches.images_per_row`), None when the config's image token does
        not account for every image."""
        return images_per_row(model, inputs, self.pixel_key)

    def _find_pixel_key(self, inputs: dict) -> str | None:
        return find_pixel_key(self.pixel_key, inputs)

    def _pixel_key(self, inputs: dict, has_image: torch.Tensor | None) -> str | None:
        """The batch key holding the images; None for a batch of text-only samples."""
        key = self._find_pixel_key(inputs)
        if key in inputs:
            return key
        if has_image is not None and not has_image.any():
            return None
        raise KeyError(
            f"vdtrain cannot find the image tensor in the batch (keys: {sorted(inputs)}; looked for "
            f"{[self.pixel_key] if self.pixel_key else list(PIXEL_KEYS)}). "
            "Set `vd_pixel_key` (or pixel_key=) to the model's image input, or register an adapter for the model."
        )

    # ------------------------------------------------------------------ logging and bookkeeping
    def _record(self, d: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> None:
        """This micro-batch's `VD_METRICS`, kept on the device: the training step never waits for the GPU here."""
        weight_max = (weights * mask).max().reshape(1).float()
        self._vd_metrics.append(torch.cat([dependence_stats_tensor(d, mask), weight_max]))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the `vd_*` metrics of the steps since the last log, averaged over steps and processes (the steps after
        the last logging step go with the end-of-training summary); `vd_weight_max` is the maximum."""
        if self._vd_metrics and ("loss" in logs or "train_loss" in logs):
            steps = torch.stack(self._vd_metrics).double()  # (micro-batches, 5)
            local = torch.cat([steps[:, :-1].mean(dim=0), steps[:, -1:].amax(dim=0)])
            gathered = self.accelerator.gather(local.to(self.args.device)[None]).cpu()  # (world, 5)
            merged = torch.cat([gathered[:, :-1].mean(dim=0), gathered[:, -1:].amax(dim=0)])
            logs.update({name: round(value, 4) for name, value in zip(VD_METRICS, merged.tolist())})
            self._vd_metrics.clear()
        super().log(logs, start_time)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # what vdtrain's collator reads: with remove_unused_columns=True, Trainer would drop SupervisedDataset's images
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *LOSS_ONLY_KEYS, IMAGE_INPUTS]))

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The host's optimizer, with the projector's parameters in their own group at `vd_projector_lr`."""
        if self.optimizer is not None or self.vd.vd_projector_lr is None or not self.projector_modules:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[bool, bool], list] = defaultdict(list)
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                is_projector = any(fragment in name for fragment in self.projector_modules)
                groups[(is_projector, name in decay)].append(param)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if has_decay else 0.0,
                **({"lr": self.vd.vd_projector_lr} if is_projector else {}),
            }
            for (is_projector, has_decay), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer
