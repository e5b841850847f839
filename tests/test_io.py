"""vdtrain.io: errors that name the file and line, atomic writes, and resuming a JSONL file a killed run left."""

import json

import pytest

from vdtrain.errors import RunMismatchError
from vdtrain.io import (
    RecordWriter,
    append_jsonl,
    atomic_path,
    atomic_write_json,
    iter_records,
    read_json,
    read_jsonl,
    read_objects,
    read_records,
    records_format,
    repair_jsonl,
    resume_jsonl,
    write_records,
)


def test_read_errors_name_the_file_and_line(tmp_path):
    bad_list = tmp_path / "list.json"
    bad_list.write_text('[\n  {"a": 1},\n  {"a": 2,}\n]')
    with pytest.raises(ValueError, match=r"list\.json, line 3: not valid JSON"):
        read_records(bad_list)
    bad_lines = tmp_path / "rows.jsonl"
    bad_lines.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match=r"rows\.jsonl, line 3: not a JSON line"):
        read_jsonl(bad_lines)
    assert read_jsonl(bad_lines, skip_bad_lines=True) == [{"a": 1}]
    assert read_jsonl(tmp_path / "absent.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError, match="absent.json does not exist"):
        read_records(tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match=f"data file {tmp_path} is a directory"):  # not "does not exist"
        read_records(tmp_path)
    scalars = tmp_path / "scalars.jsonl"
    scalars.write_text('{"a": 1}\n3\n')
    with pytest.raises(ValueError, match=r"scalars\.jsonl: record 2 is a int; expected JSON objects"):
        read_objects(scalars)


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_write_records_round_trips_in_its_format(tmp_path, fmt):
    records = [{"id": "0", "text": "caf\u00e9"}, {"id": "1", "text": "x"}]
    path = tmp_path / "sub" / f"data.{fmt}"
    write_records(path, records, fmt)
    assert records_format(path) == fmt and read_records(path) == records
    assert "caf\u00e9" in path.read_text(encoding="utf-8")  # non-ASCII kept as is
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind


def test_atomic_write_json_replaces_the_whole_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old content that is longer than the new one")
    atomic_write_json(path, {"b": [1, 2]}, indent=1)
    assert path.read_text() == json.dumps({"b": [1, 2]}, indent=1) + "\n"
    assert read_json(path) == {"b": [1, 2]}


def test_atomic_path_renames_a_finished_file_and_drops_a_failed_one(tmp_path):
    """Writers that take a path (savefig, Image.save) write beside the target under its suffix, renamed at the end."""
    from PIL import Image

    target = tmp_path / "figures" / "plot.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and not target.exists()
        Image.new("RGB", (4, 3), "red").save(tmp)  # the format comes from the suffix
    assert Image.open(target).size == (4, 3) and sorted(p.name for p in target.parent.iterdir()) == ["plot.png"]
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a fi")
        raise RuntimeError("interrupted")
    assert Image.open(target).size == (4, 3) and sorted(p.name for p in target.parent.iterdir()) == ["plot.png"]


def test_append_then_resume_after_a_killed_writer(tmp_path):
    path = tmp_path / "answers.jsonl"
    with open(path, "a") as handle:
        append_jsonl(handle, [{"i": 0}, {"i": 1}])
        handle.write('{"i": 2, "te')  # the process died mid-line
    assert resume_jsonl(path) == [{"i": 0}, {"i": 1}]
    assert path.read_text() == '{"i": 0}\n{"i": 1}\n'  # the torn line is cut, appending starts on a fresh line
    path.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(ValueError, match=r"answers\.jsonl:2: not a JSON line"):
        resume_jsonl(path)  # damage before the end is not an interrupted append
    assert resume_jsonl(tmp_path / "new.jsonl") == []


def test_repair_cuts_back_to_the_last_complete_line(tmp_path):
    path = tmp_path / "scores.rank0.jsonl"
    path.write_text('{"index": 0}\n{"index": 1}\n{"ind')
    repair_jsonl(path)
    assert path.read_text() == '{"index": 0}\n{"index": 1}\n'


def test_files_saved_with_a_byte_order_mark_read_as_without(tmp_path):
    """Editors on Windows save UTF-8 with a BOM; the data and question files read the same either way."""
    from vdtrain.data.conversations import load_conversations

    record = {"id": "é1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    for name, text in (("d.json", json.dumps([record])), ("d.jsonl", json.dumps(record) + "\n")):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8-sig")
        assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
        assert read_records(path) == [record]
        assert load_conversations(path)[0]["id"] == "é1"
    assert read_json(tmp_path / "d.json") == [record]
    written = tmp_path / "out.json"
    atomic_write_json(written, [record])
    assert written.read_bytes()[:1] == b"["  # what vdtrain writes has no BOM


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_streamed_records_equal_the_whole_file_read_and_written(tmp_path, fmt):
    """`iter_records` yields what `read_records` returns and `RecordWriter` writes what `write_records` writes,
    also when a record spans chunks or a chunk ends inside a number."""
    records = [{"id": i, "text": 'é\n"x' * (i % 7), "score": i / 3, "list": [1, {"a": None}]} for i in range(300)]
    records += [12345, "text", None, 1.5e10, []]
    whole, streamed = tmp_path / f"whole.{fmt}", tmp_path / f"streamed.{fmt}"
    for subset in (records, records[:1], []):
        write_records(whole, subset, fmt)
        assert list(iter_records(whole, chunk=7)) == read_records(whole) == subset
        with RecordWriter(streamed, fmt) as out:
            for record in subset:
                out.write(record)
        assert streamed.read_bytes() == whole.read_bytes()
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(records, separators=(",", ":")))
    assert list(iter_records(compact, chunk=5)) == records
    compact.write_text('[{"a": 1}, {"b": ]')
    with pytest.raises(ValueError, match=r"compact\.json: record 2 is not valid JSON"):
        list(iter_records(compact))


def test_a_failed_record_writer_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    write_records(path, [{"a": 1}], "json")
    with pytest.raises(RuntimeError), RecordWriter(path, "json") as out:
        out.write({"b": 2})
        raise RuntimeError("stopped")
    assert read_records(path) == [{"a": 1}] and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_recorded_run_is_written_once_and_compared_field_by_field(tmp_path):
    from vdtrain.io import recorded_run_changes
    from vdtrain.selection.embed import check_embedding_run

    path = tmp_path / "run.json"
    assert recorded_run_changes(path, {"model": "a", "seed": 1}, ["model", "seed"], is_main=False) == []
    assert not path.exists()  # only the main process records
    assert recorded_run_changes(path, {"model": "a", "seed": 1}, ["model", "seed"], is_main=True) == []
    changed = recorded_run_changes(path, {"model": "b", "seed": 1, "other": 3}, ["model", "seed"], is_main=True)
    assert changed == ["model: 'a' there, 'b' now"]
    with pytest.raises(RunMismatchError, match="records other embeddings"):
        check_embedding_run(tmp_path, {"model": "b"}, is_main=True, name="run.json")
