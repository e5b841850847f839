"""`vdtrain inspect`: per-token clean/noised probabilities and the figure, on a tiny LLaVA loaded by path."""

import json
import math

import torch
from PIL import Image
from tiny import write_images

from vdtrain.analysis.token_figure import token_class, token_dependence
from vdtrain.cli import main
from vdtrain.data.samples import sample_generator
from vdtrain.method.noise import add_diffusion_noise
from vdtrain.models.loading import load_for_inference


def test_token_dependence_matches_direct_computation(tmp_path, tiny_llava_dir):
    model, processor, adapter = load_for_inference(tiny_llava_dir)
    names = write_images(tmp_path / "img", 1)
    image = Image.open(tmp_path / "img" / names[0]).convert("RGB")
    rows = token_dependence(model, processor, adapter, image, "describe this image", "a red cat.", seed=5)
    assert "".join(r["token"] for r in rows) == " a red cat.</s>"

    # the first response token by hand: p(token | prefix) with the clean and with the noised pixels
    messages = [
        {"role": "user", "content": "<image>\ndescribe this image"},
        {"role": "assistant", "content": "a red cat."},
    ]
    example = adapter.encode(messages, processor, 16)[0]
    first = next(i for i, label in enumerate(example.labels) if label != -100)
    ids = torch.tensor([example.input_ids])
    pixels = adapter.image_inputs(processor, [image])["pixel_values"]
    eps = torch.randn(pixels.shape, generator=sample_generator(5, 0))  # the filter's noise for sample 0, seed 5
    noised = add_diffusion_noise(pixels, 900, noise=eps)
    with torch.no_grad():
        p_clean = model(input_ids=ids, pixel_values=pixels).logits[0, first - 1].softmax(-1)[ids[0, first]].item()
        p_noisy = model(input_ids=ids, pixel_values=noised).logits[0, first - 1].softmax(-1)[ids[0, first]].item()
    assert math.isclose(rows[0]["p_clean"], p_clean, rel_tol=1e-4)
    assert math.isclose(rows[0]["p_noisy"], p_noisy, rel_tol=1e-4)
    expected_d = (p_clean - p_noisy) / max(p_clean, p_noisy)
    assert math.isclose(rows[0]["d"], expected_d, abs_tol=1e-4)
    assert token_class(0.3) == "image-positive" and token_class(-0.3) == "image-negative"
    assert token_class(0.25) == "image-invariant"


def test_inspect_cli_writes_figure_and_numbers(tmp_path, tiny_llava_dir):
    names = write_images(tmp_path / "img", 1)
    figure = tmp_path / "fig" / "tokens.png"
    argv = [
        "inspect",
        "--model",
        str(tiny_llava_dir),
        "--image",
        str(tmp_path / "img" / names[0]),
        "--prompt",
        "describe this image",
        "--response",
        "there is red cat on blue mat.",
        "--output",
        str(figure),
    ]
    assert main(argv) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = Image.open(figure).size
    assert width > 600 and height > 200
    numbers = json.loads(figure.with_suffix(".json").read_text())
    assert numbers["response"] == "there is red cat on blue mat."
    assert all(0 <= row["p_clean"] <= 1 and -1 <= row["d"] <= 1 for row in numbers["tokens"])
    assert numbers["tokens"][-1]["token"] == "</s>"


def test_inspect_refuses_a_noise_step_before_loading_and_names_the_figure_it_writes(tmp_path, capsys):
    from vdtrain.analysis.token_figure import plot_token_dependence

    argv = ["--model", str(tmp_path / "no-model"), "--image", "x.png", "--prompt", "q", "--output", "f.png"]
    assert main(["inspect", *argv, "--noise-step", "1000"]) == 2  # a usage error, not a model load
    assert "argument --noise-step: the diffusion step must be in [0, 999], got 1000" in capsys.readouterr().err
    assert main(["filter", "score", "--model", "m", "--data", "d", "--output-dir", "o", "--noise-step", "-1"]) == 2
    rows = [{"token": " a", "p_clean": 0.5, "p_noisy": 0.4, "d": 0.2, "class": "image-invariant"}]
    written = plot_token_dependence(rows, tmp_path / "figure")  # no suffix: matplotlib writes figure.png
    assert written == tmp_path / "figure.png" and written.is_file()


def test_inspect_names_an_unreadable_image_before_loading_the_model(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    argv = ["--model", str(tmp_path / "no-model"), "--image", str(bad), "--prompt", "q", "--output", "f.png"]
    assert main(["inspect", *argv]) == 1  # the model path does not exist: the image was checked first
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"vdtrain inspect: error: --image {bad}: cannot be read as an image (") and "sample" not in err
    )
