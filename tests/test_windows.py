import numpy as np
import pytest

from safeview.windows import (
    CONTENT_SHARE, MAX_TILES, MAX_WINDOWS, MIN_TILE, WINDOW_ASPECT, Windowed, content_box, tile_boxes, view_boxes, window_boxes,
)


def assert_covered(boxes, shape) -> None:
    """Every box lies inside an image of ``shape`` and together they cover all of it."""
    h, w = shape
    covered = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        covered[y0:y1, x0:x1] = True
    assert covered.all()


@pytest.mark.parametrize("shape", [(96, 480), (480, 96), (12, 384), (90, 160), (100, 151), (7, 4000)])
def test_windows_cover_the_long_side_and_stay_few(shape):
    boxes = window_boxes(shape)
    assert 2 <= len(boxes) <= MAX_WINDOWS
    assert_covered(boxes, shape)
    assert all(min(x1 - x0, y1 - y0) == min(shape) for x0, y0, x1, y1 in boxes)  # the whole short side


@pytest.mark.parametrize("shape", [(96, 96), (100, 150), (150, 100), (75, 100), (1, 1)])
def test_an_image_within_the_aspect_limit_has_no_windows(shape):
    assert max(shape) <= WINDOW_ASPECT * min(shape) and window_boxes(shape) == []


def test_windowed_prediction_is_the_most_unsafe_view(red_classifier, red_scene, photo):
    """Content beside benign padding, squashed below the threshold in the whole image, is found in
    a window; an image without windows gets the classifier's own prediction."""
    image, _ = red_scene
    wide = np.concatenate([photo, photo, image, photo, photo], axis=1)
    whole = red_classifier.predict_proba(wide[None])[0]
    assert whole[1] < 0.5  # the squashed stand-in is missed by the whole image
    windowed = Windowed(red_classifier)
    assert windowed.predict_proba(wide[None])[0][1] > 0.9 and windowed.name == red_classifier.name
    assert np.array_equal(windowed.predict_proba(image[None]), red_classifier.predict_proba(image[None]))


def test_focus_is_the_window_that_holds_the_content(red_classifier, red_scene, photo):
    """CSE's attribution is computed on the most unsafe view: here the window around the stand-in."""
    image, truth = red_scene
    wide = np.concatenate([photo, photo, image, photo, photo], axis=1)
    x0, y0, x1, y1 = Windowed(red_classifier).focus(wide)
    columns = np.flatnonzero(truth.any(axis=0)) + 2 * photo.shape[1]
    assert x0 <= columns.min() and columns.max() < x1 and (y0, y1) == (0, wide.shape[0])
    assert Windowed(red_classifier).focus(image) is None


@pytest.mark.parametrize("shape", [(288, 288), (128, 200), (1080, 1920), (300, 1000), (3000, 4000), (127, 127)])
def test_tiles_cover_the_image_at_half_its_short_side_and_stay_few(shape):
    boxes = tile_boxes(shape)
    assert 4 <= len(boxes) <= MAX_TILES
    assert_covered(boxes, shape)
    assert all(x1 - x0 == y1 - y0 and MIN_TILE <= x1 - x0 < min(shape) for x0, y0, x1, y1 in boxes)  # squares, smaller than the whole
    assert len(tile_boxes((288, 288))) == 9 and tile_boxes((288, 288))[0] == (0, 0, 144, 144)


@pytest.mark.parametrize("shape", [(96, 96), (126, 126), (60, 400), (100, 3200), (1, 1)])
def test_no_tiles_below_the_smallest_side_or_at_the_windows_scale(shape):
    assert tile_boxes(shape) == []
    noise = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)  # no uniform border
    assert view_boxes(noise, tiles=True) == window_boxes(shape)


def collage(cell: np.ndarray, photo: np.ndarray, where: int = 4) -> np.ndarray:
    """A 3×3 collage of ``photo`` variants with ``cell`` as cell ``where`` (row-major)."""
    variants = [photo, photo[:, ::-1], photo[::-1], photo[::-1, ::-1]]
    cells = [variants[k % 4] for k in range(9)]
    cells[where] = cell
    return np.ascontiguousarray(np.concatenate([np.concatenate(cells[r * 3 : r * 3 + 3], axis=1) for r in range(3)], axis=0))


def test_a_collage_cell_missed_whole_is_found_hidden_and_verified_with_tiles(red_classifier, red_scene, photo):
    """The stand-in as one cell of a 3×3 collage shrinks below what the whole-image model sees, so
    without tiles the scan calls the collage safe (the limitation ``--tiles`` answers); with tiles
    the scan flags it, CSE hides it, the output is verified in every tile, and the other cells stay
    bit-identical."""
    from safeview.pipeline import Safeguard

    image, truth = red_scene
    big = collage(image, photo, where=5)
    n = photo.shape[0]
    placed = np.zeros(big.shape[:2], bool)
    placed[n : 2 * n, 2 * n : 3 * n] = truth
    assert red_classifier.predict_proba(big[None])[0][1] < 0.5
    assert Safeguard([red_classifier], attributes=()).scan(big).verdict == "safe"
    result = Safeguard([red_classifier], attributes=(), tiles=True).scan(big)
    assert result.verdict == "unsafe" and result.input.tiles == 9 and result.input.windows == 0
    x0, y0, x1, y1 = result.categories[0].seen_in  # the verdict says it came from a tile, the one around the stand-in
    assert (x1 - x0, y1 - y0) == (144, 144) and placed[y0:y1, x0:x1].sum() == placed.sum()
    assert result.output_status == "verified"
    mask = result.mask.to_mask()
    assert mask[placed].mean() > 0.95  # the stand-in is hidden
    assert mask[: n, :].sum() == 0 and mask[2 * n :, :].sum() == 0  # the collage's other rows untouched
    tiled = Windowed(red_classifier, tiles=True)
    assert tiled.predict_proba(big[None])[0][1] > 0.9
    x0, y0, x1, y1 = tiled.focus(big)
    ys, xs = np.nonzero(placed)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1


def on_canvas(image: np.ndarray, side: int, colour, at: tuple[int, int]) -> np.ndarray:
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = colour
    y, x = at
    canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return canvas


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0), (90, 140, 200)])
def test_content_box_is_the_image_inside_a_flat_canvas(photo, colour):
    """Framed on a flat canvas, the photo's own box is found exactly, and still within a JPEG
    block of it once the canvas is JPEG-compressed (the noise around the photo is not a border)."""
    import io

    from PIL import Image

    canvas = on_canvas(photo, 288, colour, at=(40, 150))
    assert content_box(canvas) == (150, 40, 246, 136)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=75)
    x0, y0, x1, y1 = content_box(np.asarray(Image.open(buffer)))
    assert 150 - 8 <= x0 <= 150 and 40 - 8 <= y0 <= 40 and 246 <= x1 <= 246 + 8 and 136 <= y1 <= 136 + 8


def test_stray_pixels_on_the_canvas_do_not_hide_the_content_box(photo):
    """A dot in every corner (or a sparse speckle) is what an attacker would add to make the canvas
    count as content; a border line needs only nearly all of its pixels flat."""
    canvas = on_canvas(photo, 320, (255, 255, 255), at=(112, 200))
    for y, x in ((0, 0), (0, 319), (319, 0), (319, 319), (5, 100), (250, 7)):
        canvas[y, x] = (0, 0, 0)
    assert content_box(canvas) == (200, 112, 296, 208)
    speckled = canvas.copy()
    speckled[::53, ::80] = (255, 0, 255)  # 4 pixels (1.25 %) of one line in 53
    assert content_box(speckled) == (200, 112, 296, 208)


def test_a_frame_of_another_colour_does_not_hide_the_canvas_inside_it(photo):
    """A 1-pixel outline around the canvas, or bars of different colours along different sides (one
    full height, one along the top only), put the canvas's colour on no edge line or only on part
    of one: the borders are peeled off one colour after another, rows and columns in turn."""
    canvas = on_canvas(photo, 288, (255, 255, 255), at=(100, 100))
    outlined = canvas.copy()
    outlined[[0, -1]] = 0
    outlined[:, [0, -1]] = 0
    assert content_box(outlined) == (100, 100, 196, 196)
    barred = canvas.copy()
    barred[:, :60] = (0, 0, 0)  # a black bar the full height of the left side
    barred[:50, 60:] = (0, 0, 255)  # a blue bar along the top, beside it
    assert content_box(barred) == (100, 100, 196, 196)


def test_a_photos_own_flat_margin_inside_the_canvas_is_not_cropped_off(photo):
    """A photo whose top third is a plain wall, on a flat canvas: its box is the whole photo, not
    the busy part below the wall (cropping the photo would be a zoomed view that can miss what the
    wall's side of it shows, and raise false positives as tiles do)."""
    walled = photo.copy()
    walled[:32] = (180, 170, 160)
    walled[:, :20] = (180, 170, 160)
    assert content_box(on_canvas(walled, 288, (255, 255, 255), at=(96, 96))) == (96, 96, 192, 192)


def test_an_elongated_content_box_is_classified_in_its_own_windows(red_classifier, red_scene, photo):
    """The stand-in beside benign photos in a 5:1 strip, framed on a flat square canvas: the image
    is not elongated, so it has no windows, and the content box squashes the strip as the whole
    elongated image would; the box's own windows find it, and focus is the one that holds it."""
    image, truth = red_scene
    strip = np.concatenate([photo, photo, image, photo, photo], axis=1)
    canvas = on_canvas(strip, 520, (255, 255, 255), at=(200, 20))
    assert window_boxes(canvas.shape) == [] and content_box(canvas) == (20, 200, 500, 296)
    assert red_classifier.predict_proba(strip[None])[0][1] < 0.5  # squashed in the content box
    windowed = Windowed(red_classifier)
    assert windowed.predict_proba(canvas[None])[0][1] > 0.9
    boxes = view_boxes(canvas)
    assert boxes[0] == (20, 200, 500, 296) and all(20 <= x0 < x1 <= 500 and (y0, y1) == (200, 296) for x0, y0, x1, y1 in boxes[1:])
    x0, y0, x1, y1 = windowed.focus(canvas)
    columns = np.flatnonzero(truth.any(axis=0)) + 20 + 2 * photo.shape[1]
    assert x0 <= columns.min() and columns.max() < x1 and (y0, y1) == (200, 296)
    from safeview.pipeline import Safeguard

    result = Safeguard([red_classifier], attributes=()).scan(canvas)
    assert result.verdict == "unsafe" and result.output_status == "verified"
    assert result.input.content_box == (20, 200, 500, 296) and result.input.windows == len(boxes) - 1 >= 2


def test_content_box_is_none_without_borders_worth_a_view(photo):
    assert content_box(photo) is None  # no uniform border
    assert content_box(np.full((200, 200, 3), 7, np.uint8)) is None  # nothing inside
    bars = np.zeros((100, 96, 3), np.uint8)
    bars[2:98] = photo  # two-pixel letterbox bars: the box holds over CONTENT_SHARE of the image
    assert (96 * 96) / (100 * 96) > CONTENT_SHARE and content_box(bars) is None
    letterbox = np.zeros((160, 96, 3), np.uint8)
    letterbox[32:128] = photo
    assert content_box(letterbox) == (0, 32, 96, 128)
    speck = on_canvas(photo[:20, :20], 288, (255, 255, 255), at=(100, 100))
    assert content_box(speck) is None  # under MIN_CONTENT a side: upscaling, not detail


def test_a_stand_in_framed_small_on_a_canvas_is_found_and_hidden_by_default(red_classifier, red_scene):
    """The cheapest way to shrink content past a model's notice, a flat canvas around it, is caught
    without --tiles: the scan classifies the image inside its borders too, flags it, hides the
    stand-in there and verifies the output in that view; the canvas stays bit-identical beyond the
    mask's few pixels of dilation."""
    from safeview.pipeline import Safeguard

    image, truth = red_scene
    canvas = on_canvas(image, 320, (255, 255, 255), at=(112, 200))
    placed = np.zeros(canvas.shape[:2], bool)
    placed[112 : 112 + 96, 200 : 200 + 96] = truth
    assert red_classifier.predict_proba(canvas[None])[0][1] < 0.5  # missed whole
    result = Safeguard([red_classifier], attributes=()).scan(canvas)
    assert result.verdict == "unsafe" and result.input.content_box == (200, 112, 296, 208) and result.input.tiles == 0
    assert result.categories[0].seen_in == (200, 112, 296, 208)
    assert Safeguard([red_classifier], attributes=()).scan(image).categories[0].seen_in is None  # the whole image
    assert result.output_status == "verified"
    mask = result.mask.to_mask()
    near = np.zeros(canvas.shape[:2], bool)
    near[112 - 4 : 208 + 4, 200 - 4 : 296 + 4] = True
    assert mask[placed].mean() > 0.95 and not mask[~near].any()
