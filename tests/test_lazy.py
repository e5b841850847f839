"""`lazy_preprocess`: samples are checked before training without tokenising them, which is sound only if the bound
on the tokens before each answer (`vdtrain.data.lazy`) never falls short; examples are tokenised on access to what
the tokenised-first path gives, and samples the bound cannot clear are tokenised while checking."""

import json

import pytest
import zoo
from PIL import Image
from tiny import tiny_llava, write_images

from vdtrain.data import SupervisedDataset, load_conversations
from vdtrain.data.lazy import PrefixBound
from vdtrain.data.sources import load_source
from vdtrain.method.dependence import IGNORE_INDEX
from vdtrain.models import ConversationError, get_adapter

LONG = " ".join(["word"] * 60)  # a long message: the bound must hold for more than the probe's one letter


def conversations(with_image: bool) -> list[list[dict[str, str]]]:
    """Short and long questions, one to three turns, unicode: what the bound has to cover."""
    image = "<image>\n" if with_image else ""
    return [
        [{"role": "user", "content": image + "hi"}, {"role": "assistant", "content": "yes."}],
        [{"role": "user", "content": image + LONG}, {"role": "assistant", "content": "a red cat."}],
        [
            {"role": "user", "content": image + "what is ünïcödé 12345 ?"},
            {"role": "assistant", "content": LONG},
            {"role": "user", "content": "and then?" + LONG},
            {"role": "assistant", "content": "blue."},
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "y"},
        ],
    ]


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_the_bound_covers_the_tokens_before_every_answer(family):
    model, processor = zoo.build(family)
    adapter = get_adapter(model, processor)
    bound = PrefixBound(adapter, processor)
    sizes = [(48, 32), (160, 96), (20, 200)] if adapter.image_token_id(processor) is not None else []
    for size in [None, *sizes]:
        tokens = adapter.num_image_tokens(processor, size) if size else 0
        assert size is None or tokens > 0, "the adapter counts the image tokens the processor repeats"
        for messages in conversations(with_image=size is not None):
            examples = adapter.encode(messages, processor, tokens, sample_id="s")
            assert adapter.count_examples(messages) == len(examples)
            bounds = bound.bounds(messages, len(examples), size)
            firsts = [next(i for i, label in enumerate(e.labels) if label != IGNORE_INDEX) for e in examples]
            assert all(first <= most for first, most in zip(firsts, bounds)), (size, firsts, bounds)
            # a bound, not a blanket: close to the truth for a short prompt
            assert bounds[0] <= firsts[0] + 4 * len(messages[0]["content"]) + 64


@pytest.mark.parametrize("family", ["udop", "vision_encoder_decoder", "pix2struct"])
def test_the_bound_of_a_family_that_reads_an_image_with_every_sample(family):
    """A family that refuses a sample without an image (UDOP, vision encoder-decoders) is probed with one (`vdtrain
    train` stopped at "sample probe has no image" before), and its bound still covers every answer's prefix."""
    import zoo_encdec

    model, processor = zoo_encdec.build(family)
    adapter = get_adapter(model, processor)
    with pytest.raises(ConversationError, match="no image"):
        adapter.encode(conversations(with_image=False)[0], processor, 0, sample_id="s")
    bound = PrefixBound(adapter, processor)
    for size in [(48, 32), (20, 200)]:
        tokens = adapter.num_image_tokens(processor, size)
        for messages in conversations(with_image=True):
            examples = adapter.encode(messages, processor, tokens, sample_id="s")
            bounds = bound.bounds(messages, len(examples), size)
            firsts = [next(i for i, label in enumerate(e.labels) if label != IGNORE_INDEX) for e in examples]
            assert all(first <= most for first, most in zip(firsts, bounds)), (size, firsts, bounds)


@pytest.fixture(scope="module")
def llava():
    model, processor = tiny_llava()
    return get_adapter(model), processor


def test_planned_examples_tokenise_on_access_to_the_tokenised_ones(tmp_path, llava):
    """A long answer truncated on access, a long first question that cannot fit (tokenised while checking and
    listed with its id), and ordinary samples: the same examples and problems as the tokenised-first path."""
    adapter, processor = llava
    names = write_images(tmp_path / "img", 3)

    def record(sample, question, answer, image=None):
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        return {"id": sample, "conversations": turns, **({"image": image} if image else {})}

    records = [
        record("short", "<image>\nhi", "a cat.", names[0]),
        record("long-answer", "<image>\nsay", LONG * 4, names[1]),
        record("long-question", "<image>\n" + LONG * 4, "ok.", names[2]),
        record("text", "hi", "yo."),
    ]
    (tmp_path / "d.json").write_text(json.dumps(records))
    kwargs = {"image_folder": tmp_path / "img", "max_length": 160, "drop_truncated": True}
    expected = SupervisedDataset(load_conversations(tmp_path / "d.json"), adapter, processor, **kwargs)
    assert expected.dropped == ["long-question"]
    for lazy in (True, False):
        dataset = SupervisedDataset(
            load_source(tmp_path / "d.json"), adapter, processor, cache_dir=tmp_path / "c", lazy=lazy, **kwargs
        )
        assert dataset.dropped == expected.dropped
        got = [dataset[index] for index in range(len(dataset))]
        assert [item["input_ids"] for item in got] == [example.input_ids for _, example in expected.items]
        assert [item["labels"] for item in got] == [example.labels for _, example in expected.items]
    assert len(got[1]["input_ids"]) == 160  # the long answer, truncated to max_length on access
    refused = r"(?s)d\.json: 1 sample\(s\) do not fit max_length=160.*'long-question'"
    with pytest.raises(ConversationError, match=refused):
        SupervisedDataset(
            load_source(tmp_path / "d.json"),
            adapter,
            processor,
            image_folder=tmp_path / "img",
            max_length=160,
            source=str(tmp_path / "d.json"),
            cache_dir=tmp_path / "c",
        )


def test_an_exif_rotated_jpeg_is_counted_upright_in_every_path(tmp_path):
    """The header's width and height are swapped by EXIF orientation 6; a family whose image tokens depend on the
    size must get the count of the upright image the model sees, checked or tokenised first, lazily or not."""
    model, processor = zoo.build("llava_next")
    adapter = get_adapter(model, processor)
    assert adapter.num_image_tokens(processor, (48, 32)) != adapter.num_image_tokens(processor, (32, 48))
    (tmp_path / "img").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown: stored 48x32, seen 32x48
    Image.new("RGB", (48, 32), (200, 30, 30)).save(tmp_path / "img" / "r.jpg", exif=exif.tobytes())
    turns = [{"from": "human", "value": "<image>\nwhat is it?"}, {"from": "gpt", "value": "red."}]
    (tmp_path / "d.json").write_text(json.dumps([{"id": "r", "image": "r.jpg", "conversations": turns}]))
    kwargs = {"image_folder": tmp_path / "img", "max_length": 512}
    expected = SupervisedDataset(load_conversations(tmp_path / "d.json"), adapter, processor, **kwargs)
    assert expected[0]["input_ids"].count(adapter.image_token_id(processor)) == adapter.num_image_tokens(
        processor, (32, 48)
    )
    for lazy in (True, False):
        source = load_source(tmp_path / "d.json")
        dataset = SupervisedDataset(source, adapter, processor, cache_dir=tmp_path / "c", lazy=lazy, **kwargs)
        assert dataset[0]["input_ids"] == expected[0]["input_ids"]
