"""TRL SFT of a vision-language model with the visual-dependence loss: `VDSFTTrainer` on TRL's own data path.

    pip install "vdtrain[trl]"
    python examples/trl_sft_vlm.py --model Qwen/Qwen2-VL-2B-Instruct --dataset HuggingFaceH4/llava-instruct-mix-vsft
    python examples/trl_sft_vlm.py --tiny          # offline smoke run: a tiny random LLaVA on generated images

Any conversational dataset with `messages` and `images` works, through TRL's VLM collator and the processor's chat
template; `--assistant-only` needs a template with `{% generation %}` markers (TRL patches the ones it knows).
Before `vd_start` every step is TRL's; from it on, TRL's loss is re-weighted and `vd_*` metrics join TRL's logs.
"""

from __future__ import annotations

import argparse

from vdtrain.integrations.trl import VDSFTConfig, VDSFTTrainer
from vdtrain.training.teardown import end_process_group

# Vicuna-v1-like template for the tiny model, with generation markers so only the answers are supervised.
TINY_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %} ASSISTANT:"
    "{% else %}{% generation %} {% for part in message['content'] %}{{ part['text'] }}{% endfor %}</s>"
    "{% endgeneration %}{% endif %}{% endfor %}"
)


def tiny_model_and_data(count: int = 16):
    """A random tiny LLaVA with its processor, and `count` conversations about generated images (no downloads)."""
    import random

    from datasets import Dataset
    from PIL import Image

    from vdtrain.demo.model import SPECIAL_TOKENS, DemoModelConfig, bpe_tokenizer, demo_model, demo_processor

    words = "there is a red cat on blue mat dog sits next to tree two apples in box describe this image".split()
    answers = [" ".join(random.Random(i).sample(words, 8)) + "." for i in range(count)]
    config = DemoModelConfig(text_hidden=64, text_layers=2)
    processor = demo_processor(bpe_tokenizer(answers + ["USER: ASSISTANT:"], 400, SPECIAL_TOKENS), config)
    processor.chat_template = TINY_TEMPLATE
    model = demo_model(processor, config)
    rows = []
    for i, answer in enumerate(answers):
        colour = tuple(random.Random(i).randrange(256) for _ in range(3))
        messages = [{"role": "user", "content": "describe this image."}, {"role": "assistant", "content": answer}]
        rows.append({"images": [Image.new("RGB", (32, 32), colour)], "messages": messages})
    return model, processor, Dataset.from_list(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id or folder of an image-text-to-text model")
    parser.add_argument("--dataset", help="hub id or folder of a dataset with `messages` and `images`")
    parser.add_argument("--tiny", action="store_true", help="offline smoke run on a tiny random model")
    parser.add_argument("--output-dir", default="outputs/trl-vd")
    parser.add_argument("--assistant-only", action="store_true", help="supervise the assistant turns only")
    args = parser.parse_args()

    if args.tiny:
        model, processor, dataset = tiny_model_and_data()
        config = dict(max_steps=8, per_device_train_batch_size=4, use_cpu=True, learning_rate=1e-3)
    else:
        from datasets import load_dataset
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(args.model, dtype="bfloat16")
        processor = AutoProcessor.from_pretrained(args.model)
        dataset = load_dataset(args.dataset, split="train")
        config = dict(num_train_epochs=1, per_device_train_batch_size=4, gradient_accumulation_steps=4, bf16=True)
    training_args = VDSFTConfig(
        output_dir=args.output_dir,
        vd_weighting="neg",  # emphasise image-negative tokens (Eq. 5.3)
        vd_temperature=0.5,
        vd_start=0.5,  # the second half of training re-weights
        max_length=None,  # never cut through the image tokens
        assistant_only_loss=args.assistant_only or args.tiny,
        logging_steps=1,
        report_to="none",
        **config,
    )
    trainer = VDSFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    for entry in trainer.state.log_history:
        if "loss" in entry:
            keys = ("step", "loss", "entropy", "mean_token_accuracy", "vd_mean", "vd_weight_max")
            print({key: entry[key] for key in keys if key in entry})
    end_process_group(trainer)  # under `accelerate launch`: the process group and its threads end before exit


if __name__ == "__main__":
    main()
