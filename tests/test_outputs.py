"""A scan run's files: written atomically, never over an input, and at a cost per image that does
not grow with the number of inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from safeview import outputs
from safeview.outputs import ScanRun
from safeview.pipeline import Safeguard


def test_a_run_resolves_its_inputs_once_not_once_per_image(red_classifier, red_scene, photo, tmp_path, monkeypatch):
    """Issue 18: every record used to build a store that resolved every input path again, which
    made a 500-image scan spend about 20 s on it (quadratic in the number of inputs)."""
    folder = tmp_path / "in"
    folder.mkdir()
    files = []
    for i, image in enumerate([red_scene[0], photo, np.ascontiguousarray(red_scene[0][:, ::-1])]):
        files.append(folder / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    stores = []
    real = outputs.FolderStore.__init__
    monkeypatch.setattr(outputs.FolderStore, "__init__", lambda self, *a, **k: stores.append(1) or real(self, *a, **k))
    guard = Safeguard([red_classifier], attributes=())
    with ScanRun(tmp_path / "out") as run:
        todo = run.todo(files)
        for path, result in zip(todo, guard.scan_many([str(p) for p in todo])):
            record = run.record(path, result)
            assert "verdict" in record, record
    assert len(stores) == 1
    lines = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [line["verdict"] for line in lines] == ["unsafe", "safe", "unsafe"]


def test_same_name_and_bytes_in_two_folders_keep_their_own_files(red_classifier, red_scene, tmp_path):
    """a/x.png and b/x.png with the same bytes used to share the key ``x-<sha8>``: b's JSON and
    output overwrote a's, whose record then named a file describing another input."""
    files = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "x.png")
        Image.fromarray(red_scene[0]).save(files[-1])
    guard = Safeguard([red_classifier], attributes=())
    with ScanRun(tmp_path / "out") as run:
        todo = run.todo(files)
        records = [run.record(p, r) for p, r in zip(todo, guard.scan_many([str(p) for p in todo]))]
    jsons = [r["outputs"]["json"] for r in records]
    assert len(set(jsons)) == 2 and len({r["outputs"]["obfuscated"] for r in records}) == 2
    for path, location in zip(files, jsons):
        assert json.loads(open(location).read())["input"]["path"] == str(path)
    with ScanRun(tmp_path / "out", resume=True) as run:  # a resumed run knows the keys already taken
        third = tmp_path / "c" / "x.png"
        third.parent.mkdir()
        third.write_bytes(files[0].read_bytes())
        todo = run.todo([*files, third])
        assert todo == [third]
        record = run.record(third, guard.scan(str(third)))
    assert record["outputs"]["json"] not in jsons


def test_a_folder_store_never_writes_over_an_input(tmp_path):
    """An output whose name is that of an input (an --out holding the scanned files) is refused,
    and the input keeps its bytes."""
    from safeview.errors import SafeViewError
    from safeview.outputs import FolderStore

    source = tmp_path / "x-0123abcd.json"
    source.write_bytes(b"the user's file")
    store = FolderStore(tmp_path, inputs=[tmp_path / "." / source.name])
    with pytest.raises(SafeViewError, match="would overwrite an input"):
        store.put("json", source.name, b"{}")
    assert source.read_bytes() == b"the user's file" and store.written == []
    store.put("json", "y.json", b"{}")  # any other name is written
    assert (tmp_path / "y.json").read_bytes() == b"{}" and store.written == [str(tmp_path / "y.json")]


def test_force_in_a_copied_folder_leaves_the_first_folders_files(red_classifier, red_scene, tmp_path):
    """A results folder copied elsewhere keeps records naming the first folder's files: --force
    in the copy removes what the copy holds, never what its records name outside it."""
    import shutil

    src = tmp_path / "scene.png"
    Image.fromarray(red_scene[0]).save(src)
    with ScanRun(tmp_path / "first") as run:
        record = run.record(src, Safeguard([red_classifier], attributes=()).scan(src))
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    first_files = sorted(p for p in (tmp_path / "first").rglob("*") if p.is_file())
    assert all(str(tmp_path / "first") in location for location in record["outputs"].values())
    ScanRun(tmp_path / "copy", force=True)
    assert sorted(p for p in (tmp_path / "first").rglob("*") if p.is_file()) == first_files
    assert not (tmp_path / "copy" / "results.jsonl").exists()


def scanned_into(out, src, classifier, image):
    """``image`` saved as ``src`` and scanned by ``classifier`` into the run folder ``out``: its
    record and the output files it names."""
    src.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(src)
    with ScanRun(out) as run:
        record = run.record(src, Safeguard([classifier], attributes=()).scan(src))
    return record, [Path(location) for location in record["outputs"].values()]


def append_record(out, record) -> None:
    """A hand-made ``record`` appended to ``out``'s results.jsonl (a forged or edited one)."""
    with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def test_force_deletes_only_files_where_a_scan_writes_them(red_classifier, red_scene, tmp_path):
    """--force removes the earlier run's outputs, but a hand-edited or hostile results.jsonl that
    names other files inside the folder (an original kept beside the results, a user's notes, a
    file in a subfolder) cannot have it delete them: only the places a scan writes are removed."""
    src = tmp_path / "out" / "originals" / "scene.png"
    record, ours = scanned_into(tmp_path / "out", src, red_classifier, red_scene[0])
    assert ours and all(p.is_file() for p in ours)
    keep = {src: src.read_bytes()}
    for name, data in (("notes.txt", b"mine"), ("photo.jpg", b"\xff\xd8"), ("assets/logo.svg", b"<svg/>"), ("sub/a.json", b"{}")):
        path = tmp_path / "out" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        keep[path] = data
    forged = dict(record, outputs={**record["outputs"], **{f"view.{i}": str(p) for i, p in enumerate(keep)},
                                   "json": str(tmp_path / "out" / "sub" / "a.json"), "obfuscated": str(src)})
    append_record(tmp_path / "out", forged)
    ScanRun(tmp_path / "out", force=True)
    assert all(path.read_bytes() == data for path, data in keep.items())
    assert not any(p.exists() for p in ours) and not (tmp_path / "out" / "results.jsonl").exists()


def test_force_deletes_the_outputs_of_an_input_whose_name_starts_with_a_dot(red_classifier, red_scene, tmp_path):
    """A folder walk scans hidden files too: ``.scene.png``'s outputs are ``.scene-<sha8>.json``,
    ``.safe.png`` and ``assets/.scene-<sha8>.*``, which are where a scan writes them, so --force
    removes them like any other input's."""
    src = tmp_path / "in" / ".scene.png"
    record, ours = scanned_into(tmp_path / "out", src, red_classifier, red_scene[0])
    assert {"json", "obfuscated"} <= set(record["outputs"]) and all(p.is_file() and p.name.startswith(".") for p in ours)
    ScanRun(tmp_path / "out", force=True)
    assert not [p for p in ours if p.exists()] and src.is_file()


def test_force_deletes_only_files_named_as_a_scan_names_them(red_classifier, red_scene, tmp_path):
    """A scan names its files after their input, ``<stem>-<sha8>``: a forged record that names a
    user's ``labels.json``, ``cover.safe.png`` or ``assets/logo.png`` in the folder, at the places
    but not under the names a scan writes, cannot have --force delete them."""
    record, ours = scanned_into(tmp_path / "out", tmp_path / "in" / "scene.png", red_classifier, red_scene[0])
    keep = {}
    for name in ("labels.json", "cover.safe.png", "assets/logo.png", "assets/banner.jpg"):
        path = tmp_path / "out" / name
        path.write_bytes(b"mine")
        keep[path] = b"mine"
    forged = dict(record, outputs={"json": str(tmp_path / "out" / "labels.json"), "obfuscated": str(tmp_path / "out" / "cover.safe.png"),
                                   "view.original": str(tmp_path / "out" / "assets" / "logo.png"),
                                   "view.blurred": str(tmp_path / "out" / "assets" / "banner.jpg")})
    append_record(tmp_path / "out", forged)
    ScanRun(tmp_path / "out", force=True)
    assert [path.name for path in keep if not path.is_file()] == []
    assert all(path.read_bytes() == data for path, data in keep.items())
    assert not [p for p in ours if p.exists()]


def test_resume_scans_again_an_input_whose_bytes_changed(red_classifier, red_scene, photo, tmp_path):
    """--resume skips an image already scanned only when its bytes are the same: a file replaced
    since (here a benign photo by the stand-in) is scanned again, not left with the old verdict."""
    files = [tmp_path / "x.png", tmp_path / "y.png"]
    for path in files:
        Image.fromarray(photo).save(path)
    guard = Safeguard([red_classifier], attributes=())
    with ScanRun(tmp_path / "out") as run:
        assert [run.record(p, guard.scan(p))["verdict"] for p in run.todo(files)] == ["safe", "safe"]
    Image.fromarray(red_scene[0]).save(files[0])
    with ScanRun(tmp_path / "out", resume=True) as run:
        assert run.todo(files) == [files[0]]
