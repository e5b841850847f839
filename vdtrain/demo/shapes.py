"""The demo's world: 15 object classes, how PIL draws them (legible at 32 px) and how captions name them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in supersampled pixels
Colour = tuple[int, int, int]
DrawFn = Callable[[ImageDraw.ImageDraw, Box, Colour], None]


@dataclass(frozen=True)
class ObjectClass:
    """One demo category: its caption words (single English nouns) and how it is drawn."""

    name: str
    plural: str
    synonyms: tuple[str, ...]
    adjective: str
    colour: Colour
    draw: DrawFn
    supercategory: str = "object"


def _lerp(box: Box, fx: float, fy: float) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    return x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)


def _sub(box: Box, fx0: float, fy0: float, fx1: float, fy1: float) -> Box:
    return (*_lerp(box, fx0, fy0), *_lerp(box, fx1, fy1))


def _darker(c: Colour, f: float = 0.55) -> Colour:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def _apple(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    d.ellipse(_sub(b, 0.05, 0.2, 0.95, 1.0), fill=c)
    d.rectangle(_sub(b, 0.45, 0.0, 0.55, 0.3), fill=(100, 60, 20))
    d.ellipse(_sub(b, 0.55, 0.02, 0.85, 0.2), fill=(40, 160, 40))
    d.ellipse(_sub(b, 0.22, 0.35, 0.4, 0.52), fill=(255, 200, 200))


def _banana(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    x0, y0, x1, y1 = _sub(b, 0.0, 0.26, 1.0, 0.74)
    d.rounded_rectangle((x0, y0, x1, y1), radius=(y1 - y0) / 2, fill=c)
    for f in (0.3, 0.5, 0.7):
        xa, _ = _lerp(b, f, 0)
        w = max(1.0, (x1 - x0) * 0.06)
        d.rectangle((xa - w / 2, y0, xa + w / 2, y1), fill=(120, 80, 20))


def _box(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    w = max(1, int((b[2] - b[0]) * 0.1))
    d.rectangle(b, fill=c, outline=_darker(c), width=w)


def _leaf(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    pts = [_lerp(b, 0.0, 0.5)] + [_lerp(b, t, 0.5 - 0.38 * math.sin(math.pi * t)) for t in np.linspace(0.1, 0.9, 7)]
    pts += [_lerp(b, 1.0, 0.5)] + [_lerp(b, t, 0.5 + 0.38 * math.sin(math.pi * t)) for t in np.linspace(0.9, 0.1, 7)]
    d.polygon(pts, fill=c)
    d.line([_lerp(b, 0.05, 0.5), _lerp(b, 0.95, 0.5)], fill=_darker(c), width=max(1, int((b[2] - b[0]) * 0.06)))


def _tree(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    d.rectangle(_sub(b, 0.4, 0.65, 0.6, 1.0), fill=(110, 70, 30))
    d.polygon([_lerp(b, 0.5, 0.0), _lerp(b, 0.95, 0.72), _lerp(b, 0.05, 0.72)], fill=c)


def _cup(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    w = max(1, int((b[2] - b[0]) * 0.12))
    d.ellipse(_sub(b, 0.5, 0.3, 0.98, 0.72), outline=c, width=w)
    d.polygon([_lerp(b, 0.05, 0.15), _lerp(b, 0.75, 0.15), _lerp(b, 0.66, 0.92), _lerp(b, 0.14, 0.92)], fill=c)


def _cake(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    d.rectangle(_sub(b, 0.05, 0.35, 0.95, 0.95), fill=c)
    d.rectangle(_sub(b, 0.05, 0.35, 0.95, 0.5), fill=(255, 255, 255))
    d.ellipse(_sub(b, 0.4, 0.08, 0.6, 0.3), fill=(200, 0, 30))


def _fish(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    d.polygon([_lerp(b, 0.62, 0.5), _lerp(b, 1.0, 0.2), _lerp(b, 1.0, 0.8)], fill=c)
    d.ellipse(_sub(b, 0.0, 0.22, 0.75, 0.78), fill=c)
    d.ellipse(_sub(b, 0.14, 0.38, 0.26, 0.5), fill=(0, 0, 0))


def _boat(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    w = max(1, int((b[2] - b[0]) * 0.06))
    d.polygon(
        [_lerp(b, 0.5, 0.05), _lerp(b, 0.5, 0.62), _lerp(b, 0.15, 0.62)], fill=(250, 250, 250), outline=(60, 60, 60)
    )
    d.line([_lerp(b, 0.52, 0.05), _lerp(b, 0.52, 0.66)], fill=(60, 60, 60), width=w)
    d.polygon([_lerp(b, 0.0, 0.65), _lerp(b, 1.0, 0.65), _lerp(b, 0.8, 0.95), _lerp(b, 0.2, 0.95)], fill=c)


def _gem(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    d.polygon([_lerp(b, 0.5, 0.0), _lerp(b, 0.9, 0.5), _lerp(b, 0.5, 1.0), _lerp(b, 0.1, 0.5)], fill=c)
    d.polygon([_lerp(b, 0.5, 0.2), _lerp(b, 0.7, 0.5), _lerp(b, 0.5, 0.5), _lerp(b, 0.3, 0.5)], fill=(255, 180, 255))


def _flag(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    d.rectangle(_sub(b, 0.1, 0.0, 0.2, 1.0), fill=(70, 70, 70))
    d.rectangle(_sub(b, 0.2, 0.05, 0.95, 0.55), fill=c)


def _clock(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    w = max(1, int((b[2] - b[0]) * 0.1))
    d.ellipse(b, fill=c, outline=(20, 20, 20), width=w)
    centre = _lerp(b, 0.5, 0.5)
    d.line([centre, _lerp(b, 0.5, 0.18)], fill=(20, 20, 20), width=w)
    d.line([centre, _lerp(b, 0.75, 0.6)], fill=(20, 20, 20), width=w)


def _book(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    d.rectangle(_sub(b, 0.15, 0.05, 0.85, 0.95), fill=c)
    d.rectangle(_sub(b, 0.72, 0.1, 0.85, 0.9), fill=(245, 245, 230))
    d.rectangle(_sub(b, 0.15, 0.05, 0.27, 0.95), fill=_darker(c))


def _wheel(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    d.ellipse(b, fill=c)
    d.ellipse(_sub(b, 0.27, 0.27, 0.73, 0.73), fill=(170, 170, 170))
    d.ellipse(_sub(b, 0.42, 0.42, 0.58, 0.58), fill=c)


def _star(d: ImageDraw.ImageDraw, b: Box, c: Colour) -> None:
    pts = []
    for k in range(10):
        r = 0.5 if k % 2 == 0 else 0.21
        a = -math.pi / 2 + k * math.pi / 5
        pts.append(_lerp(b, 0.5 + r * math.cos(a), 0.54 + r * math.sin(a)))
    d.polygon(pts, fill=c)


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("apple", "apples", ("fruit",), "red", (225, 30, 30), _apple, "food"),
    ObjectClass("banana", "bananas", ("plantain",), "yellow", (245, 215, 30), _banana, "food"),
    ObjectClass("box", "boxes", ("crate", "carton"), "blue", (35, 65, 215), _box),
    ObjectClass("leaf", "leaves", ("frond",), "green", (95, 215, 60), _leaf, "nature"),
    ObjectClass("tree", "trees", ("pine", "fir"), "tall", (15, 105, 35), _tree, "nature"),
    ObjectClass("cup", "cups", ("mug",), "cyan", (30, 195, 215), _cup, "kitchen"),
    ObjectClass("cake", "cakes", ("cupcake",), "pink", (245, 130, 190), _cake, "food"),
    ObjectClass("fish", "fish", ("goldfish",), "orange", (250, 135, 20), _fish, "animal"),
    ObjectClass("boat", "boats", ("ship", "sailboat"), "wooden", (130, 75, 25), _boat, "vehicle"),
    ObjectClass("gem", "gems", ("jewel",), "shiny", (205, 35, 205), _gem),
    ObjectClass("flag", "flags", ("banner", "pennant"), "purple", (100, 40, 165), _flag),
    ObjectClass("clock", "clocks", ("timepiece",), "round", (250, 250, 250), _clock),
    ObjectClass("book", "books", ("notebook",), "teal", (0, 120, 120), _book),
    ObjectClass("wheel", "wheels", ("tire", "tyre"), "black", (25, 25, 25), _wheel, "vehicle"),
    ObjectClass("star", "stars", ("starburst",), "golden", (225, 170, 0), _star),
)
CLASS_BY_NAME: dict[str, ObjectClass] = {c.name: c for c in CLASSES}


@dataclass(frozen=True)
class DrawnObject:
    """One drawn instance: class, tight bbox `[x, y, w, h]` and visible area in output pixels, share left visible."""

    name: str
    bbox: tuple[float, float, float, float]
    area: float
    visible: float


def render_scene(
    names: Sequence[str], rng: np.random.Generator, image_size: int = 32, supersample: int = 4, p_small: float = 0.15
) -> tuple[Image.Image, list[DrawnObject]]:
    """Draw `names` (later ones on top) on a light noisy background; return the RGB image and per-object boxes."""
    s = image_size * supersample
    base = rng.integers(175, 236, size=3)
    ramp = np.linspace(-12, 12, s)[:, None, None] * rng.choice([-1, 1])
    bg = np.clip(base[None, None, :] + ramp, 0, 255).astype(np.uint8) * np.ones((1, s, 1), np.uint8)
    canvas = Image.fromarray(bg, "RGB").convert("RGBA")
    placed: list[tuple[int, int, int]] = []  # x, y, size of each object's square box
    masks: list[np.ndarray] = []
    for name in names:
        cls = CLASS_BY_NAME[name]
        frac = rng.uniform(0.2, 0.27) if rng.random() < p_small else rng.uniform(0.3, 0.45)
        size = max(supersample * 5, int(frac * s))
        for _ in range(30):  # rejection-sample a spot that leaves every object mostly visible
            x, y = (int(v) for v in rng.integers(0, s - size + 1, size=2))
            if all(_overlap(x, y, size, *p) < 0.35 for p in placed):
                break
        placed.append((x, y, size))
        colour = tuple(int(v) for v in np.clip(np.array(cls.colour) + rng.integers(-15, 16, size=3), 0, 255))
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        cls.draw(ImageDraw.Draw(layer), (0, 0, size - 1, size - 1), colour)  # type: ignore[arg-type]
        canvas.alpha_composite(layer, dest=(x, y))
        mask = np.zeros((s, s), bool)
        mask[y : y + size, x : x + size] = np.asarray(layer.getchannel("A")) > 127
        masks.append(mask)
    image = canvas.convert("RGB").resize((image_size, image_size), Image.Resampling.BOX)
    pixels = np.asarray(image, np.int16) + rng.normal(0, 5, (image_size, image_size, 3)).round().astype(np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    objects = []
    covered = np.zeros((s, s), bool)
    for name, mask in zip(reversed(names), reversed(masks)):
        visible = mask & ~covered
        covered |= mask
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = (
            xs.min() / supersample,
            ys.min() / supersample,
            (xs.max() + 1) / supersample,
            (ys.max() + 1) / supersample,
        )
        bbox = (round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2))
        area = round(float(visible.sum()) / supersample**2, 2)
        objects.append(DrawnObject(name, bbox, area, round(float(visible.sum() / mask.sum()), 3)))
    return image, objects[::-1]


def _overlap(x: int, y: int, size: int, px: int, py: int, psize: int) -> float:
    """Intersection of two square boxes as a fraction of the smaller one."""
    w = min(x + size, px + psize) - max(x, px)
    h = min(y + size, py + psize) - max(y, py)
    return max(w, 0) * max(h, 0) / min(size, psize) ** 2


_TEMPLATES = (
    "A photo with {objs}.",
    "There {be} {objs}.",
    "I can see {objs}.",
    "This image shows {objs}.",
    "A picture of {objs}.",
    "The image contains {objs}.",
    "{Objs} on a plain background.",
    "{Objs} {are} visible in this picture.",
    "In this picture there {be} {objs}.",
)
_PAIR_TEMPLATES = ("There {be} {a} next to {b}.", "I can see {a} near {b}.", "{A} beside {b}.")


def article(word: str) -> str:
    """'an' before a vowel, else 'a' (the POPE template's rule)."""
    return "an" if word[0] in "aeiou" else "a"


def _phrase(cls: ObjectClass, count: int, rng: np.random.Generator, p_synonym: float, p_adjective: float) -> str:
    noun = cls.plural if count > 1 else cls.name
    if count == 1 and rng.random() < p_synonym:
        noun = str(rng.choice(cls.synonyms))
    words = [cls.adjective, noun] if rng.random() < p_adjective else [noun]
    det = "two" if count > 1 else ("one" if rng.random() < 0.1 else article(words[0]))
    return " ".join([det, *words])


def make_caption(
    counts: Mapping[str, int], rng: np.random.Generator, p_synonym: float = 0.2, p_adjective: float = 0.35
) -> str:
    """One short templated English caption naming every category in `counts` (name -> instance count)."""
    names = list(counts)
    rng.shuffle(names)
    phrases = [_phrase(CLASS_BY_NAME[n], counts[n], rng, p_synonym, p_adjective) for n in names]
    be = "is" if counts[names[0]] == 1 else "are"
    if len(phrases) == 2 and rng.random() < 0.3:
        text = str(rng.choice(_PAIR_TEMPLATES)).format(be=be, a=phrases[0], A=phrases[0].capitalize(), b=phrases[1])
    else:
        objs = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        are = "is" if len(phrases) == 1 and be == "is" else "are"
        text = str(rng.choice(_TEMPLATES)).format(be=be, are=are, objs=objs, Objs=objs.capitalize())
    if len(text.split()) < 6:
        text = text[:-1] + (" in the image." if "background" in text else " on a plain background.")
    return text


def read_synonyms(path: str | Path) -> dict[str, list[str]]:
    """Parse a coco_synonyms.txt-style file as the CHAIR code does: category -> its words (category first)."""
    out: dict[str, list[str]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            words = line.strip().split(", ")
            out[words[0]] = words
    return out


def pluralize(word: str) -> str:
    """Regular English plural of a synonym word, so the matcher knows "mugs", "crates", "fronds"."""
    if word.endswith("f"):
        return word[:-1] + "ves"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else word + "s"


def mentioned_categories(caption: str, word_to_category: Mapping[str, str]) -> set[str]:
    """Categories a caption names: lowercase word tokens, plural 's'/'es' stripped, negation ignored (as CHAIR)."""
    found = set()
    for tok in re.findall(r"[a-z]+", caption.lower()):
        for cand in (tok, tok[:-1] if tok.endswith("s") else "", tok[:-2] if tok.endswith("es") else ""):
            if cand in word_to_category:
                found.add(word_to_category[cand])
                break
    return found
