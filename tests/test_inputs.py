import json

import pytest

from safeview.errors import SafeViewError
from safeview.inputs import expand_inputs, file_sha256, hash_file, list_inputs, read_error, read_manifest


def test_manifests_of_each_format_with_labels(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    names = ["a.png", "sub/b.png", str(tmp_path / "abs.png")]
    expected = [str(tmp_path / "a.png"), str(tmp_path / "sub/b.png"), str(tmp_path / "abs.png")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"path": n, "label": 1}) + "\n" for n in names))
    (tmp_path / "m.csv").write_text("label,path\n" + "".join(f"1,{n}\n" for n in names))
    pq.write_table(pa.table({"path": names, "label": [1, 1, 1]}), tmp_path / "m.parquet")
    for suffix in ("jsonl", "csv", "parquet"):
        assert [r["path"] for r in read_manifest(tmp_path / f"m.{suffix}")] == expected
        assert {r["label"] for r in read_manifest(tmp_path / f"m.{suffix}", ("path", "label"))} == {"1"}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.csv", "file\nx.png\n", "'path'"),
        ("nolabel.jsonl", '{"path": "a.png"}\n', "'label'"),
        ("broken.jsonl", '{"path": \n', "not valid JSONL"),
        ("m.txt", "a.png\n", "not a manifest"),
    ],
)
def test_bad_manifests_are_one_line_errors_naming_the_file(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SafeViewError, match=message) as info:
        read_manifest(tmp_path / name, ("path", "label"))
    assert name in str(info.value) and "\n" not in str(info.value)


def test_list_inputs_expands_folders_globs_and_manifests(tmp_path):
    (tmp_path / "d").mkdir()
    for n in ("x.png", "y.jpg", "notes.txt"):
        (tmp_path / "d" / n).write_bytes(b"x")
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "missing.png"}) + "\n")
    paths, errors = list_inputs([str(tmp_path / "d"), str(tmp_path / "m.jsonl"), str(tmp_path / "nothing*")])
    assert [p.rsplit("/", 1)[1] for p in paths] == ["x.png", "y.jpg", "missing.png"]  # manifest paths kept: error rows later
    assert errors and "no such file" in errors[0][1]
    files, folder_errors = expand_inputs([str(tmp_path / "d" / "notes.txt"), str(tmp_path)])
    assert not folder_errors and len(files) == 3


def test_hashing_and_read_errors(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    sha, size = hash_file(tmp_path / "a.bin")
    assert size == 3 and sha == file_sha256(tmp_path / "a.bin") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(OSError) as info:
        hash_file(tmp_path / "nope.png")
    assert read_error("nope.png", info.value) == "nope.png: no such file; check the path"


def test_the_output_folder_is_never_walked_for_inputs(tmp_path):
    """An --out inside the scanned folder used to hand a rerun the earlier run's outputs (safe.png
    files, report thumbnails) as inputs; --out equal to the folder scanned its own outputs too."""
    (tmp_path / "photo.png").write_bytes(b"x")
    (tmp_path / "res" / "assets").mkdir(parents=True)
    for name in ("photo-1234abcd.safe.png", "assets/photo-1234abcd.blurred.jpg"):
        (tmp_path / "res" / name).write_bytes(b"x")
    files, errors = expand_inputs([str(tmp_path)], exclude=tmp_path / "res")
    assert [p.name for p in files] == ["photo.png"] and not errors
    files, errors = expand_inputs([str(tmp_path / "**" / "*.png")], exclude=tmp_path / "res")
    assert [p.name for p in files] == ["photo.png"]
    for out in (tmp_path, tmp_path.parent):  # the folder is the output folder, or inside it
        files, errors = expand_inputs([str(tmp_path)], exclude=out)
        assert not files and "output folder" in errors[0][1]
    paths, errors = list_inputs([str(tmp_path)], exclude=tmp_path / "res")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["photo.png"]
    files, _ = expand_inputs([str(tmp_path / "res" / "photo-1234abcd.safe.png")], exclude=tmp_path / "res")
    assert len(files) == 1  # a file named explicitly is kept


def test_broken_and_looping_links_in_a_folder_are_errors(tmp_path):
    """They used to be left out silently: the image was never scanned and nothing said so."""
    (tmp_path / "ok.png").write_bytes(b"x")
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    files, errors = expand_inputs([str(tmp_path)])
    assert [p.name for p in files] == ["ok.png"]
    assert sorted(item.rsplit("/", 1)[1] for item, _ in errors) == ["a.jpg", "b.jpg", "gone.png"]
    assert all("symbolic link" in message for _, message in errors)
