import numpy as np
import pytest
from PIL import Image

from safeview.data import parse_class_map, read_dataset, stratified_split, synth_origin
from safeview.errors import SafeViewError


def test_stratified_split_is_deterministic_and_groups_duplicates():
    labels = [0] * 50 + [1] * 30
    groups = [f"g{i // 2}" for i in range(80)]  # every file has one identical twin
    a = stratified_split(labels, seed=3, groups=groups)
    b = stratified_split(labels, seed=3, groups=groups)
    c = stratified_split(labels, seed=4, groups=groups)
    assert all(np.array_equal(x, y) for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test)))
    assert not np.array_equal(a.val, c.val)
    assert sorted(np.concatenate([a.train, a.val, a.test]).tolist()) == list(range(80))
    part_of = {int(i): p for p, idx in zip("tvs", (a.train, a.val, a.test)) for i in idx}
    assert all(part_of[2 * g] == part_of[2 * g + 1] for g in range(40))
    labels = np.asarray(labels)
    # 25 and 15 twin pairs: 80 % (20 and 12 pairs) train, 10 % (2 and 2) validation, the rest test
    assert [int((labels[a.train] == k).sum()) for k in (0, 1)] == [40, 24]
    assert [int((labels[a.val] == k).sum()) for k in (0, 1)] == [4, 4]
    assert [int((labels[a.test] == k).sum()) for k in (0, 1)] == [6, 2]
    # the split does not depend on the order the files were listed in
    perm = np.random.default_rng(0).permutation(80)
    d = stratified_split(labels[perm], seed=3, groups=[groups[i] for i in perm])
    assert sorted(perm[d.val].tolist()) == a.val.tolist()


def test_manifests_and_class_map(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i:03d}.png")
    (tmp_path / "m.csv").write_text("path,label\nimgs/000.png,neutral\nimgs/001.png,porn\nimgs/002.png,sexy\n")
    (tmp_path / "m.jsonl").write_text('{"path": "imgs/000.png", "label": "safe"}\n\n{"path": "imgs/003.png", "label": "unsafe"}\n')
    mapping = parse_class_map(["neutral=safe", "sexy=safe", "porn=unsafe"])
    ds = read_dataset(tmp_path / "m.csv", class_map=mapping)
    assert ds.classes == ["safe", "unsafe"] and ds.labels == [0, 1, 0]
    assert ds.paths[1] == tmp_path / "imgs" / "001.png"
    ds = read_dataset(tmp_path / "m.jsonl")
    assert ds.classes == ["safe", "unsafe"] and ds.labels == [0, 1]
    with pytest.raises(SafeViewError, match="not in --map"):
        read_dataset(tmp_path / "m.csv", class_map={"neutral": "safe"})
    with pytest.raises(SafeViewError, match="FOLDER=CLASS"):
        parse_class_map(["porn"])
    with pytest.raises(SafeViewError, match="missing class folder"):
        read_dataset(tmp_path, class_map={"imgs": "safe", "nope": "unsafe"})


def test_synth_origin_reads_what_safeview_synth_recorded(tmp_path):
    """Data drawn by ``safeview synth`` is recognised from its manifest (in the class folder's
    parent, as ``generate`` writes it); other folders and a broken manifest give None."""
    from safeview.synth import generate

    generate(tmp_path / "d", n=2, seed=3, size=64, categories=["sexual"], recipe="train")
    origin = synth_origin(tmp_path / "d" / "sexual")
    assert origin == {"generator": "safeview.synth", "recipe": "train", "seed": 3, "size": 64, "written": ["sexual"]}
    assert synth_origin(tmp_path / "d") == origin
    (tmp_path / "other").mkdir()
    assert synth_origin(tmp_path / "other") is None
    (tmp_path / "other" / "manifest.json").write_text("{not json")
    assert synth_origin(tmp_path / "other") is None
