import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from safeview.synth import CATEGORIES, MASK_FRACTION_RANGE, generate, make_background, make_sample

SEEDS = range(6)


def _inside_boxes(shape, placements, *, standin):
    inside = np.zeros(shape, bool)
    for p in placements:
        if standin is None or p.standin == standin:
            x0, y0, x1, y1 = p.box
            inside[y0:y1, x0:x1] = True
    return inside


@pytest.mark.parametrize("category", CATEGORIES)
def test_same_seed_same_sample_and_different_seed_different_image(category):
    a = make_sample(category, True, seed=3, size=96)
    b = make_sample(category, True, seed=3, size=96)
    c = make_sample(category, True, seed=4, size=96)
    assert a.image.dtype == np.uint8 and a.image.shape == (96, 96, 3)
    assert a.mask.dtype == bool and a.mask.shape == (96, 96)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.placements == b.placements
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("category", CATEGORIES)
def test_unsafe_mask_is_exactly_the_stand_in(category):
    low, high = MASK_FRACTION_RANGE
    for seed in SEEDS:
        sample = make_sample(category, True, seed=seed, size=128)
        background = make_background(seed=seed, size=128)
        assert sample.unsafe and sample.category == category and sample.seed == seed
        assert any(p.standin for p in sample.placements)
        assert low <= sample.mask_fraction <= high
        # no mask outside the stand-ins' boxes
        assert not (sample.mask & ~_inside_boxes(sample.mask.shape, sample.placements, standin=True)).any()
        # nothing outside the drawn objects changed; the opaque stand-in replaced the background
        untouched = ~_inside_boxes(sample.mask.shape, sample.placements, standin=None)
        assert np.array_equal(sample.image[untouched], background[untouched])
        changed = (sample.image != background).any(axis=-1)
        assert changed[sample.mask].mean() > 0.95


@pytest.mark.parametrize("category", CATEGORIES)
def test_safe_samples_have_empty_masks_but_contain_distractors(category):
    for seed in SEEDS:
        sample = make_sample(category, False, seed=seed, size=128)
        assert not sample.unsafe and not sample.mask.any() and sample.boxes == []
        assert len(sample.placements) >= 1 and not any(p.standin for p in sample.placements)
        background = make_background(seed=seed, size=128)
        assert (sample.image != background).any(axis=-1).mean() > 0.005


def test_safe_and_unsafe_with_one_seed_share_their_background():
    safe, unsafe = make_sample("self_harm", False, seed=9, size=96), make_sample("self_harm", True, seed=9, size=96)
    untouched = ~(_inside_boxes((96, 96), safe.placements, standin=None) | _inside_boxes((96, 96), unsafe.placements, standin=None))
    assert untouched.any()
    assert np.array_equal(safe.image[untouched], unsafe.image[untouched])


def test_stand_in_kinds_differ_from_distractor_kinds():
    for category in CATEGORIES:
        standins = {p.kind for s in SEEDS for p in make_sample(category, True, seed=s, size=96).placements if p.standin}
        distractors = {p.kind for s in SEEDS for p in make_sample(category, False, seed=s, size=96).placements}
        assert standins and distractors and not standins & distractors


def test_unknown_category_is_refused():
    with pytest.raises(ValueError, match="unknown category"):
        make_sample("violence", True, seed=0)


def test_generate_writes_image_folders_masks_and_manifest(tmp_path):
    calls = []
    manifest_path = generate(tmp_path / "a", n=7, seed=1, size=64, progress=lambda i, n: calls.append((i, n)))
    assert manifest_path == tmp_path / "a" / "manifest.json"
    assert calls == [(i, 7) for i in range(1, 8)]
    manifest = json.loads(manifest_path.read_text())
    items = manifest["items"]
    assert manifest["seed"] == 1 and manifest["size"] == 64 and len(items) == 7
    assert [sum(it["category"] == c for it in items) for c in CATEGORIES] == [3, 2, 2]
    assert len({it["id"] for it in items}) == 7
    for it in items:
        image = np.asarray(Image.open(tmp_path / "a" / it["path"]))
        assert it["path"] == f"{it['category']}/{it['label']}/{it['id']}.png"
        sample = make_sample(it["category"], it["label"] == "unsafe", seed=it["seed"], size=64)
        assert np.array_equal(image, sample.image)
        assert it["mask_fraction"] == pytest.approx(sample.mask_fraction, abs=1e-6)
        assert [o["box"] for o in it["objects"] if o["standin"]] == [list(b) for b in sample.boxes]
        if it["label"] == "unsafe":
            mask = np.asarray(Image.open(tmp_path / "a" / it["mask"])) == 255
            assert it["mask"] == f"{it['category']}/masks/{it['id']}.png"
            assert np.array_equal(mask, sample.mask)
        else:
            assert it["mask"] is None and it["mask_fraction"] == 0
    # same arguments -> byte-identical files; another seed -> other images
    generate(tmp_path / "b", n=7, seed=1, size=64)
    generate(tmp_path / "c", n=7, seed=2, size=64)
    for it in items:
        assert (tmp_path / "a" / it["path"]).read_bytes() == (tmp_path / "b" / it["path"]).read_bytes()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    first = {it["id"]: it["path"] for it in items}
    other = {it["id"]: it["path"] for it in json.loads((tmp_path / "c" / "manifest.json").read_text())["items"]}
    assert any(
        first[i] != other[i] or (tmp_path / "a" / first[i]).read_bytes() != (tmp_path / "c" / other[i]).read_bytes()
        for i in first
    )


def test_generate_splits_labels_by_unsafe_fraction(tmp_path):
    items = json.loads(generate(tmp_path, n=8, size=64, categories=["sexual"], unsafe_fraction=0.25).read_text())["items"]
    assert sorted(it["label"] for it in items) == ["safe"] * 6 + ["unsafe"] * 2


def test_generate_refuses_a_non_empty_directory_unless_forced(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="force=True"):
        generate(tmp_path, n=3, size=64)
    assert not (tmp_path / "manifest.json").exists()
    generate(tmp_path, n=3, size=64, force=True)
    assert (tmp_path / "manifest.json").exists() and (tmp_path / "keep.txt").exists()


def test_generate_only_rewrites_a_category_identically(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    generate(full, n=9, seed=3, size=64)
    generate(part, n=9, seed=3, size=64, only=["cyberbullying"])
    written = sorted(p.relative_to(part) for p in part.rglob("*.png"))
    assert written and all(p.parts[0] == "cyberbullying" for p in written)
    assert written == sorted(p.relative_to(full) for p in (full / "cyberbullying").rglob("*.png"))
    for rel in written:
        assert (part / rel).read_bytes() == (full / rel).read_bytes()


@pytest.mark.parametrize("category", CATEGORIES)
def test_smallest_size_draws_every_kind(category):
    for seed in range(25):  # tiny glyphs once broke Pillow's rounded rectangles
        for unsafe in (False, True):
            sample = make_sample(category, unsafe, seed=seed, size=64)
            assert sample.image.shape == (64, 64, 3)


def test_train_recipe_never_draws_on_the_held_out_photos(monkeypatch):
    """The demo models must never see the photos they are measured on: every background of the
    ``train`` recipe comes from TRAIN_PHOTOS, and the ``benchmark`` recipe's from HELDOUT_PHOTOS."""
    from safeview import synth

    used: list[str] = []
    original = synth.real_photo

    def spy(name):
        used.append(name)
        return original(name)

    monkeypatch.setattr(synth, "real_photo", spy)
    assert not set(synth.TRAIN_PHOTOS) & set(synth.HELDOUT_PHOTOS)
    for seed in range(40):
        make_sample("self_harm", seed % 2 == 0, seed=seed, size=64, recipe="train")
    assert used and set(used) <= set(synth.TRAIN_PHOTOS)
    used.clear()
    for seed in range(40):
        make_sample("self_harm", seed % 2 == 0, seed=seed, size=64)
    assert used and set(used) <= set(synth.HELDOUT_PHOTOS)


def test_train_recipe_adds_bare_backgrounds_and_other_categories_objects_as_negatives():
    from safeview.synth import _KINDS

    safe = [make_sample("sexual", False, seed=s, size=64, recipe="train") for s in range(60)]
    assert sum(not s.placements for s in safe) >= 5  # bare backgrounds
    others = {k for c in CATEGORIES if c != "sexual" for kinds in _KINDS[c] for k in kinds}
    kinds = {p.kind for s in safe for p in s.placements}
    assert kinds & {"gesture", "wounds"} and kinds & others  # other categories' stand-ins are negatives here
    assert all(not s.mask.any() for s in safe)
    unsafe = make_sample("sexual", True, seed=3, size=64, recipe="train")
    assert unsafe.mask.any() and all(p.kind == "rings" for p in unsafe.placements if p.standin)


def test_train_faces_recipe_adds_faces_as_negatives_and_no_other_recipe_draws_one():
    samples = [make_sample("cyberbullying", s % 2 == 0, seed=s, size=64, recipe="train_faces") for s in range(60)]
    with_face = [s for s in samples if any(p.kind == "face" for p in s.placements)]
    assert len(with_face) >= 5 and any(s.unsafe for s in with_face) and any(not s.unsafe for s in with_face)
    assert not any(p.standin for s in with_face for p in s.placements if p.kind == "face")  # a face is never content
    assert all(not s.mask.any() for s in with_face if not s.unsafe)
    for recipe in ("benchmark", "train"):
        kinds = {p.kind for s in range(60) for p in make_sample("cyberbullying", s % 2 == 0, seed=s, size=64, recipe=recipe).placements}
        assert "face" not in kinds


def test_train_petals_recipe_adds_flower_heads_as_negatives_and_no_other_recipe_draws_one():
    samples = [make_sample("self_harm", s % 2 == 0, seed=s, size=64, recipe="train_petals") for s in range(60)]
    with_petals = [s for s in samples if any(p.kind == "petals" for p in s.placements)]
    assert len(with_petals) >= 5 and any(s.unsafe for s in with_petals) and any(not s.unsafe for s in with_petals)
    assert not any(p.standin for s in with_petals for p in s.placements if p.kind == "petals")  # never content
    assert all(not s.mask.any() for s in with_petals if not s.unsafe)
    for recipe in ("benchmark", "train", "train_faces"):
        kinds = {p.kind for s in range(60) for p in make_sample("self_harm", s % 2 == 0, seed=s, size=64, recipe=recipe).placements}
        assert "petals" not in kinds
    # the recipes without petals draw exactly the images they drew before the petals existed (their
    # digest taken with the code before): the benchmark and the other demo models' data are unchanged
    digest = hashlib.sha256()
    for recipe in ("benchmark", "train", "train_faces"):
        for seed in range(6):
            for unsafe in (True, False):
                digest.update(make_sample("self_harm", unsafe, seed=seed, size=64, recipe=recipe).image.tobytes())
    assert digest.hexdigest() == "d29edb6ab08bbe3998badc8fea5a2a680aadd1ba8c98f75069ba8884ceb436e5"


def test_unknown_recipe_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe"):
        make_sample("sexual", True, seed=0, recipe="mine")
    with pytest.raises(ValueError, match="unknown recipe"):
        generate(tmp_path / "x", n=3, recipe="mine")


def test_real_photo_views_frame_each_photo_six_ways():
    from safeview.synth import REAL_PHOTOS, real_photo, real_photo_views

    views = real_photo_views(["china", "grace_hopper"])
    assert [label for label, _ in views][:2] == ["china/whole", "china/centre"] and len(views) == 12
    whole = real_photo("china")
    assert np.array_equal(views[0][1], whole) and views[2][1].shape[0] == int(0.6 * whole.shape[0])
    assert all(image.dtype == np.uint8 and image.shape[2] == 3 for _, image in views)
    assert real_photo("camera").shape[2] == 3 and set(REAL_PHOTOS) >= {"china", "flower", "grace_hopper"}
    with pytest.raises(ValueError, match="unknown photo"):
        real_photo("lena")


def test_lfw_views_are_200_distinct_real_photos():
    from safeview.synth import lfw_views

    views = lfw_views()
    assert len(views) == 200 and len({label.split("/")[0] for label, _ in views}) == 200
    assert views[0][0] == "lfw-face-000/whole" and views[100][0] == "lfw-other-000/whole"
    assert all(image.shape == (25, 25, 3) and image.dtype == np.uint8 for _, image in views)
    assert 0 < np.mean([image.mean() for _, image in views]) < 255
