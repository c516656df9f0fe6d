import json

import numpy as np
import pytest
from PIL import Image

from safeview.protect import (
    ProtectError,
    ProtectFile,
    ProtectedRegion,
    cut_segments,
    kept_shares,
    protected_twins,
    region_from_spec,
    resolve,
    working_protection,
)


def test_box_polygon_and_mask_specs(tmp_path):
    box = region_from_spec({"box": [2, 3, 6, 5], "label": "tattoo"}, (10, 10))
    assert box.label == "tattoo" and box.source == "user" and box.mask.sum() == 8 and box.box == [2, 3, 6, 5]
    clipped = region_from_spec({"box": [-5, -5, 4, 400]}, (10, 10))  # clipped to the image
    assert clipped.box == [0, 0, 4, 10]
    triangle = region_from_spec({"polygon": [[0, 0], [9, 0], [0, 9]]}, (10, 10))
    assert triangle.mask[0, 0] and not triangle.mask[9, 9] and 40 <= triangle.mask.sum() <= 60
    drawn = np.zeros((10, 10), np.uint8)
    drawn[4:6, 4:8] = 255
    Image.fromarray(drawn).save(tmp_path / "m.png")
    mask = region_from_spec({"mask": str(tmp_path / "m.png")}, (10, 10))
    assert np.array_equal(mask.mask, drawn > 0)


@pytest.mark.parametrize("spec, words", [
    ({}, "exactly one of box, polygon or mask"),
    ({"box": [1, 2, 3, 4], "polygon": [[0, 0], [1, 1], [2, 0]]}, "exactly one"),
    ({"box": [5, 5, 2, 8]}, "x1 > x0"),
    ({"polygon": [[0, 0], [1, 1]]}, "polygon"),
    ({"box": [0, 0, 1, 1], "colour": "red"}, "colour"),
    ({"box": "everything"}, "box"),
    ({"box": [0, 0, float("inf"), 4]}, "finite"),  # JSON's 1e999 reads as infinity: it cannot be rounded to a pixel
    ({"polygon": [[float("nan"), 0], [4, 0], [0, 4]]}, "finite"),  # NaN would become a far-away vertex
])
def test_bad_specs_are_one_line_errors(spec, words):
    with pytest.raises(ProtectError) as info:
        region_from_spec(spec, (10, 10), where="photo.jpg")
    assert words in str(info.value) and "photo.jpg" in str(info.value) and "\n" not in str(info.value)


def test_transparent_pixels_of_a_mask_protect_nothing(tmp_path):
    """A mask painted on a transparent layer (as image editors export it): only the painted pixels
    are protected. Composited onto white, as images are for scanning, the transparent rest was
    non-zero and the whole image came out protected."""
    painted = np.zeros((10, 10, 4), np.uint8)
    painted[2:5, 2:5] = 255
    Image.fromarray(painted, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(painted[..., [0, 3]], "LA").save(tmp_path / "la.png")
    for name in ("rgba.png", "la.png"):
        region = region_from_spec({"mask": str(tmp_path / name)}, (10, 10))
        assert region.mask.sum() == 9 and region.box == [2, 2, 5, 5]


def test_a_mask_of_another_size_is_refused(tmp_path):
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ProtectError, match="of the image's size"):
        region_from_spec({"mask": str(tmp_path / "small.png")}, (10, 10))
    with pytest.raises(ProtectError, match="shape"):
        resolve([np.ones((3, 3), bool)], (10, 10))


def test_cut_segments_splits_every_straddling_region():
    segments = np.zeros((8, 8), np.int32)
    segments[:, 4:] = 1  # two regions, left and right
    segments[0, 0] = 2  # a third region, wholly outside
    protected = np.zeros((8, 8), bool)
    protected[2:6, 2:6] = True  # straddles both
    cut = cut_segments(segments, protected)
    assert len(np.unique(cut)) == 5
    for r in np.unique(cut):  # every region lies wholly inside or wholly outside
        assert len(np.unique(protected[cut == r])) == 1
    assert cut_segments(segments, np.zeros((8, 8), bool)) is segments


def test_twins_need_an_unbroken_seam():
    """A protected piece's twin is the rest of its region when the image goes on across the
    boundary (the content under a protected box); a tile's own edge, or no rest, gives None."""
    segments = np.zeros((8, 8), np.int32)
    segments[:, 4:] = 1
    protected = np.zeros((8, 8), bool)
    protected[2:6, 2:6] = True
    cut = cut_segments(segments, protected)
    plain = np.full((8, 8, 3), 120, np.uint8)
    twins = protected_twins(plain, segments, cut, protected, seam_delta=10)
    assert set(twins) == set(np.unique(cut[protected]).tolist()) and len(twins) == 2
    for inside, outside in twins.items():  # each piece's twin is the rest of its region
        assert outside is not None and not protected[cut == outside].any()
        assert np.unique(segments[(cut == inside) | (cut == outside)]).size == 1
    tiled = plain.copy()
    tiled[protected] = (230, 160, 200)  # a pasted tile: its edge breaks the seam
    assert set(protected_twins(tiled, segments, cut, protected, seam_delta=10).values()) == {None}
    half = plain.copy()
    half[protected & (segments == 0)] = (230, 160, 200)  # only the left piece is a tile
    twins = protected_twins(half, segments, cut, protected, seam_delta=10)
    assert sorted(v is None for v in twins.values()) == [False, True]
    whole = np.zeros((8, 8), bool)
    whole[:, 4:] = True  # region 1 lies wholly inside: nothing to continue
    assert set(protected_twins(plain, segments, cut_segments(segments, whole), whole, seam_delta=10).values()) == {None}
    assert protected_twins(plain, segments, segments, np.zeros((8, 8), bool), seam_delta=10) == {}


def test_working_protection_is_conservative():
    protected = np.zeros((100, 100), bool)
    protected[40, 40] = True  # one full-resolution pixel
    small = working_protection(protected, (10, 10))
    assert small.sum() == 1 and small[4, 4]


def test_kept_shares_count_bit_identical_pixels():
    image = np.zeros((4, 4, 3), np.uint8)
    output = image.copy()
    output[0, 0, 2] = 1  # one channel of one pixel changed
    region = ProtectedRegion(np.ones((4, 4), bool))
    assert kept_shares(image, output, [region]) == [15 / 16]
    assert kept_shares(image, None, [region]) == [1.0]


def test_protect_file_matches_paths_and_names(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "m.png")
    path = tmp_path / "protect.json"
    path.write_text(json.dumps({
        "imgs/a.jpg": [{"box": [0, 0, 2, 2]}],
        "b.png": [{"mask": "m.png", "label": "tattoo"}],
        "typo.jpg": [{"box": [0, 0, 1, 1]}],
    }))
    file = ProtectFile(path)
    assert len(file.specs_for(tmp_path / "imgs" / "a.jpg")) == 1  # relative to the file
    (spec,) = file.specs_for("/elsewhere/b.png")  # by file name; its mask lies beside the protect file
    assert region_from_spec(spec, (10, 10)).mask.all()
    assert file.specs_for(tmp_path / "c.jpg") == []
    assert file.unused([tmp_path / "imgs" / "a.jpg", "b.png"]) == ["typo.jpg"]


@pytest.mark.parametrize("text, words", [
    ("{not json", "not a readable JSON"),
    ('["a.jpg"]', "maps each image path to a list"),
    ('{"a.jpg": [{"box": [3, 3, 1, 1]}]}', "a.jpg[0]"),
    ('{"a.jpg": [{"box": [0, 0, 1e999, 1]}]}', "a.jpg[0]"),  # refused when read, not when the image is flagged
])
def test_bad_protect_files(tmp_path, text, words):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(ProtectError, match=words.replace("[", r"\[")):
        ProtectFile(path)
    with pytest.raises(ProtectError, match="no such protect file"):
        ProtectFile(tmp_path / "missing.json")
