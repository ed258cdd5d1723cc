import json

import pytest

from ifplay.core.records import Checkpoint, RecordError, read_jsonl, write_jsonl


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(RecordError, match=r"bad\.jsonl:3: not valid JSON"):
        read_jsonl(path)


def test_missing_field_and_non_object(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "p"}\n')
    with pytest.raises(RecordError, match=r"x\.jsonl:1: missing field\(s\) response"):
        read_jsonl(path, required=("prompt", "response"))
    path.write_text("[1, 2]\n")
    with pytest.raises(RecordError, match=r"x\.jsonl:1: expected a JSON object"):
        read_jsonl(path)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(RecordError, match="nope.jsonl: no such file"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": 1}])

    def broken():
        yield {"a": 2}
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_checkpoint_resumes_and_drops_torn_tail(tmp_path):
    out = tmp_path / "responses.jsonl"
    journal = Checkpoint(out, id_field="key")
    journal.append([{"key": 1, "v": "a"}, {"key": 2, "v": "b"}])
    # simulate a kill in the middle of writing the third record
    with open(journal.path, "a") as handle:
        handle.write('{"key": 3, "v": "tr')
    resumed = Checkpoint(out, id_field="key")
    assert resumed.done == {1, 2}
    resumed.append([{"key": 3, "v": "c"}])
    records = resumed.finish(order=[3, 2, 1])
    assert [r["key"] for r in records] == [3, 2, 1]
    assert not journal.path.exists()
    assert [json.loads(line)["v"] for line in out.read_text().splitlines()] == ["c", "b", "a"]


def test_link_dir_replaces_atomically(tmp_path):
    from ifplay.core.records import link_dir

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    out = tmp_path / "out" / "checkpoint"
    link_dir(a, out)
    assert (out / "x").read_text() == "a"
    link_dir(b, out)
    assert (out / "x").read_text() == "b" and out.is_symlink()
    assert not (tmp_path / "out" / "checkpoint.tmp").exists()
