"""One image loader for every command: EXIF orientation as HF pipelines apply it, 16-bit and float pixels scaled to
8 bits, and images over the decompression-bomb limit refused per file, by name, with the setting that raises it."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import write_conversations, write_images

from vdtrain.cli import main as cli
from vdtrain.data import check_images, load_image
from vdtrain.data.images import MAX_PIXELS_VARIABLE
from vdtrain.models.base import ConversationError


def write_bomb(path: Path, width: int = 20_000, height: int = 10_000) -> Path:
    """A valid 1-bit PNG of `width x height` (200 megapixels, over PIL's 179-megapixel limit) in a few kilobytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + b"\x00" * ((width + 7) // 8)) * height
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    )
    return path


def test_sixteen_bit_png_keeps_its_gradient(tmp_path: Path):
    gradient = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(gradient).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    pixels = np.asarray(load_image(tmp_path / "g16.png"))
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert (pixels == 255).all(axis=2).mean() < 0.01  # PIL's convert("RGB") leaves 99.6% pure white
    expected = np.rint(gradient / 257.0).astype(np.uint8)
    assert np.array_equal(pixels[..., 0], expected) and np.array_equal(pixels[..., 2], expected)


def test_float_image_in_zero_one_is_scaled(tmp_path: Path):
    values = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(values, "F").save(tmp_path / "f.tiff")
    pixels = np.asarray(load_image(tmp_path / "f.tiff"))
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255 and pixels[16, 0, 0] == round(16 * 32 / 1023 * 255)


def test_exif_orientation_as_transformers_load_image(tmp_path: Path):
    from transformers.image_utils import load_image as hf_load_image

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 20:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    ours, theirs = load_image(tmp_path / "rotated.jpg"), hf_load_image(str(tmp_path / "rotated.jpg"))
    assert ours.size == theirs.size == (20, 40)  # upright: width and height swapped
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert np.asarray(ours)[2, 10, 0] > 200 and np.asarray(ours)[-3, 10, 2] > 200  # red on top, blue below


def test_image_over_the_pixel_limit_is_named_with_the_setting(tmp_path: Path, monkeypatch):
    bomb = write_bomb(tmp_path / "images" / "huge.png")
    with pytest.raises(ConversationError) as error:
        load_image(bomb, "s9")
    message = str(error.value)
    assert message.startswith(f"sample 's9': image {bomb} is 20000x10000 = 200 megapixels, over the limit of 179")
    assert f"{MAX_PIXELS_VARIABLE}=200000000" in message

    names = write_images(tmp_path / "images", 2)
    records = [{"id": "a", "image": names[0]}, {"id": "big", "image": "huge.png"}, {"id": "b", "image": names[1]}]
    with pytest.raises(FileNotFoundError) as error:
        check_images(records, tmp_path / "images", "data.json")
    assert f"sample 'big': {bomb} (is 20000x10000 = 200 megapixels, over the limit" in str(error.value)
    assert "sample 'a'" not in str(error.value)

    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")  # the setting moves the limit both ways
    with pytest.raises(ConversationError, match=r"img_000.png is 32x32 = 0 megapixels, over the limit"):
        load_image(tmp_path / "images" / names[0])
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1024")
    assert load_image(tmp_path / "images" / names[0]).size == (32, 32)


def test_train_and_eval_generate_name_the_oversized_image(tmp_path: Path, tiny_llava_dir: Path, capsys):
    names = write_images(tmp_path / "images", 3)
    write_bomb(tmp_path / "images" / names[1])
    write_conversations(tmp_path / "data.json", names)
    argv = ["train", "--model", str(tiny_llava_dir), "--data", str(tmp_path / "data.json"), "--image_folder"]
    argv += [str(tmp_path / "images"), "--output_dir", str(tmp_path / "out"), "--device", "cpu", "--max_steps", "1"]
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "DecompressionBomb" not in err
    assert f"sample 's1': {tmp_path / 'images' / names[1]} (is 20000x10000 = 200 megapixels" in err

    questions = tmp_path / "pope.jsonl"
    rows = [{"question_id": i, "image": name, "text": "Is there a cat?"} for i, name in enumerate(names)]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["eval", "generate", "--model", str(tiny_llava_dir), "--questions", str(questions), "--image-folder"]
    argv += [str(tmp_path / "images"), "--output", str(tmp_path / "a.jsonl"), "--max-new-tokens", "2", "--no-progress"]
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"vdtrain eval generate: error: sample '1': image {tmp_path / 'images' / names[1]} is 20000"
    )
