"""Views of an image besides the whole (its content box, windows and tiles): a classifier squashes
its whole input into a square, so content that fills a small part of the image shrinks until the
model no longer sees it, for example beside benign padding (a stand-in joined side by side with two
copies of a photo, 3:1). An elongated image is therefore also classified in overlapping
windows along its long side, and its unsafe probability is the highest of the whole and the
windows — in the scan's verdict, in CSE's search and in verification alike (:class:`Windowed`), so
an output called safe is safe in every window too.

The cheapest way to shrink content, a flat canvas or letterbox bars around it, costs one more
forward: an image with uniform borders is also classified inside them (:func:`content_box`). Of the
stand-ins the demo models flag at 224², centred on a flat canvas of twice the side, half were still
flagged whole; of three times, 15-19 % (bench/windows.py).

The same squashing hides content that fills only a small part of any image: a stand-in the demo
models flag alone is still flagged as one cell of a 2×2 collage of benign photos (a square image)
in 38 % of cases, of a 3×3 in 9 % (bench/windows.py). With ``tiles`` (``--tiles``), every image
whose tiles are at least :data:`MIN_TILE` pixels is also classified in overlapping square tiles of
half its short side (:func:`tile_boxes`): 100 % and 84 % (38 % of 4×4 collages, whose cells are
half a tile). It is off by default because zoomed-in tiles of benign photos are new to the demo
models and raise their false positives, from 0-2 % to 2-10 % of benign 448² photos; turn it on for
models trained on, or holding up on, crops.

Hand-written because it is a thin wrapper: the windows are crops of the image, classified by the
wrapped classifier (and so reused within :func:`safeview.classify.remembered` like any input).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

import cv2
import numpy as np

if TYPE_CHECKING:
    from .classify import Classifier

#: an image whose long side exceeds this many times its short side is classified in windows too.
#: Measured on the demo models (bench/windows.py): a stand-in they flag at 224² is still flagged in 84 %
#: of cases once widened to 16:9 with a benign photo, 75 % at 2:1 and 24 % at 3:1, and in 99-100 % with
#: windows; at 3:2 and 4:3, left one forward a query (4:3 would cost three), 93 % and 98 %
WINDOW_ASPECT = 1.5
#: windows per image at most: a longer image gets longer windows (each query costs 1 + windows forwards)
MAX_WINDOWS = 8
#: tiles per image at most (a square image has 9): a longer one gets larger tiles
MAX_TILES = 16
#: the smallest tile side, in pixels: a smaller one is mostly upscaling, not detail the whole image lacks
MIN_TILE = 64
#: how far (0-255, in any channel) a border line's pixels may lie from its edge line's colour: a flat
#: colour, JPEG noise on it included
BORDER_TOLERANCE = 24
#: the share of a line's pixels that must lie that near for it to be border: stray pixels (a dot in a
#: corner, a watermark's edge) do not make a canvas content
BORDER_FILL = 0.98
#: an image's content box is a view only when it holds at most this share of the image; then the
#: content is shrunk by at least a tenth a side in the whole image
CONTENT_SHARE = 0.8
#: the smallest content box side, in pixels, that is a view
MIN_CONTENT = 32


def window_boxes(shape: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """The windows ``(x0, y0, x1, y1)``, end-exclusive, of an image of ``shape`` (H, W, …): none for
    an image within :data:`WINDOW_ASPECT`; otherwise windows as long as the short side (longer when
    more than :data:`MAX_WINDOWS` would be needed), overlapping by half, the last one at the end."""
    h, w = int(shape[0]), int(shape[1])
    short, long = min(h, w), max(h, w)
    if short < 1 or long <= WINDOW_ASPECT * short:
        return []
    length = max(short, math.ceil(2 * long / (MAX_WINDOWS + 1)))
    count = math.ceil((long - length) / (length / 2)) + 1
    starts = np.linspace(0, long - length, count).round().astype(int)
    if w >= h:
        return [(int(s), 0, int(s) + length, h) for s in starts]
    return [(0, int(s), w, int(s) + length) for s in starts]


def tile_boxes(shape: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """The tiles ``(x0, y0, x1, y1)``, end-exclusive, of an image of ``shape`` (H, W, …): squares of
    half its short side, overlapping by half and covering it (a square image has 3×3), grown when more
    than :data:`MAX_TILES` would be needed; none when a tile would be smaller than :data:`MIN_TILE`, or
    as large as the short side (the scale of :func:`window_boxes`)."""
    h, w = int(shape[0]), int(shape[1])
    short = min(h, w)
    side = math.ceil(short / 2)
    if side < MIN_TILE:
        return []
    while True:
        nx, ny = (math.ceil((length - side) / (side / 2)) + 1 for length in (w, h))
        if nx * ny <= MAX_TILES:
            break
        side = math.ceil(side * 1.1)
        if side >= short:
            return []
    xs = np.linspace(0, w - side, nx).round().astype(int)
    ys = np.linspace(0, h - side, ny).round().astype(int)
    return [(int(x), int(y), int(x) + side, int(y) + side) for y in ys for x in xs]


def _border_depth(a: np.ndarray, axis: int, from_end: bool) -> int:
    """How many lines of ``a`` (H×W×C) along ``axis`` (0: rows, 1: columns), counted inwards from its
    start or end, are border lines in a row: at least :data:`BORDER_FILL` of their pixels within
    :data:`BORDER_TOLERANCE` of the edge line's median colour in every channel. Read in growing
    chunks, so a photo costs a line or two, and only the chunks read are copied."""
    n = a.shape[axis]

    def lines(i: int, j: int) -> np.ndarray:
        """Lines ``i`` to ``j - 1`` counted from the edge, as (L, N, C), the edge's first."""
        part = slice(n - j, n - i) if from_end else slice(i, j)
        chunk = a[part] if axis == 0 else a[:, part].transpose(1, 0, 2)
        return np.ascontiguousarray(chunk[::-1] if from_end else chunk)

    colour = np.median(lines(0, 1)[0], axis=0).round().astype(a.dtype)
    depth, size = 0, 1
    while depth < n:
        chunk = lines(depth, min(n, depth + size))
        flat = np.empty_like(chunk)
        flat[:] = colour
        apart = cv2.absdiff(chunk, flat).reshape(chunk.shape)  # OpenCV's saturating |a - b|: numpy's takes 10× as long here
        apart = np.maximum.reduce([apart[..., k] for k in range(apart.shape[-1])])  # per channel, not axis=-1 (slow on 3)
        near = (apart <= BORDER_TOLERANCE).mean(axis=1) >= BORDER_FILL
        if not near.all():
            return depth + int(np.argmin(near))
        depth, size = depth + len(chunk), min(2 * size, 256)
    return depth


def _peeled(a: np.ndarray, passes: int | None) -> list[int] | None:
    """The box ``[x0, y0, x1, y1]`` left once border lines are peeled off ``a`` (H×W×C): rows, then
    columns, then rows again inside those, … for at most ``passes`` passes (None: until neither
    moves); None when nothing, or under :data:`MIN_CONTENT` a side, is left."""
    h, w = a.shape[:2]
    box, axis, steady, done = [0, 0, w, h], 0, 0, 0
    while steady < 2 and (passes is None or done < passes):
        x0, y0, x1, y1 = box
        region = a[y0:y1, x0:x1]
        n = region.shape[axis]
        start = _border_depth(region, axis, False)
        if start == n:
            return None
        end = _border_depth(region, axis, True)
        if n - start - end < MIN_CONTENT:
            return None
        lo, hi = (1, 3) if axis == 0 else (0, 2)  # rows move y0, y1; columns x0, x1
        box[lo], box[hi] = box[lo] + start, box[hi] - end
        steady, axis, done = steady + 1 if start == end == 0 else 1, 1 - axis, done + 1
    return box


def content_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box ``(x0, y0, x1, y1)`` of ``image`` inside its uniform borders (a flat canvas, letterbox
    bars: rows and columns, from each edge inwards, nearly all of whose pixels have the edge line's
    colour, so a few stray pixels do not make a border content), or None when there are none worth
    a view: the box holds more than :data:`CONTENT_SHARE` of the image, is under :data:`MIN_CONTENT`
    pixels a side, or nothing is left inside.

    One pass of rows and one of columns finds a flat canvas; when it leaves over half the image (a
    frame or bars of other colours around the canvas: a 1-pixel outline, a bar along one side),
    rows and columns are peeled in turn until neither moves. Not always, because inside a canvas
    the peeling would go on into a photo's own flat margins (a plain wall, a sky) and crop it."""
    a = np.asarray(image)
    a = a[..., None] if a.ndim == 2 else a
    h, w = a.shape[:2]
    if h < 2 or w < 2:
        return None
    box = _peeled(a, 2)
    if box is None or (box[2] - box[0]) * (box[3] - box[1]) > 0.5 * h * w:
        box = _peeled(a, None)
    if box is None or (box[2] - box[0]) * (box[3] - box[1]) > CONTENT_SHARE * h * w:
        return None
    x0, y0, x1, y1 = box
    return x0, y0, x1, y1


def view_boxes(image: np.ndarray, tiles: bool = False) -> list[tuple[int, int, int, int]]:
    """Every box ``image`` is classified in besides the whole: its :func:`content_box` and, when
    that is elongated, the box's own windows (content in a strip on a canvas is squashed in the box
    as it is in an elongated image), its windows, then (with ``tiles``) its tiles."""
    shape = np.shape(image)
    inside = content_box(image)
    boxes = []
    if inside:
        x0, y0, x1, y1 = inside
        boxes = [inside, *((x0 + a, y0 + b, x0 + c, y0 + d) for a, b, c, d in window_boxes((y1 - y0, x1 - x0)))]
    return [*boxes, *window_boxes(shape), *(tile_boxes(shape) if tiles else [])]


def _views(image: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """``image`` itself, then its crop to each of ``boxes``."""
    return [image, *(np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in boxes)]


class Windowed:
    """A classifier whose prediction for an image is the row of the most unsafe of the whole image
    and its :func:`view_boxes` (its content box, windows and, with ``tiles``, tiles; the whole
    image's row where none is more unsafe), and which says which view that is (:meth:`focus`, where
    CSE computes its attribution); everything else — labels, the module, the runtime — is the
    wrapped classifier's."""

    def __init__(self, classifier: "Classifier", tiles: bool = False) -> None:
        self.classifier = classifier
        self.tiles = tiles

    def __getattr__(self, name: str) -> Any:
        return getattr(self.classifier, name)

    def focus(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """The box of the view of ``image`` the classifier finds most unsafe, or None when that is
        the whole image (CSE's attribution is computed there: the whole image's map is squashed too)."""
        if not view_boxes(image, self.tiles):
            return None  # no view but the whole: no forward needed to say so
        return self.predictions([image])[1][0]

    def predictions(self, images: np.ndarray | Iterable[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int, int, int] | None]]:
        """:meth:`predict_proba`'s rows, and for each image the box of the view they are of (None:
        the whole image), in one batched forward of every view."""
        images = list(images)
        views, owners, boxes = [], [], []
        for i, image in enumerate(images):
            mine = view_boxes(image, self.tiles)
            views.extend(_views(image, mine))
            owners.extend([i] * (len(mine) + 1))
            boxes.append([None, *mine])
        if len(views) == len(images):
            return np.asarray(self.classifier.predict_proba(images)), [None] * len(images)
        probs = np.asarray(self.classifier.predict_proba(views))
        unsafe = self.classifier.unsafe_probability(probs)
        owners_arr = np.asarray(owners)
        rows, winners = [], []
        for i in range(len(images)):
            mine = np.flatnonzero(owners_arr == i)
            k = int(np.argmax(unsafe[mine]))  # ties keep the whole image
            rows.append(probs[mine[k]])
            winners.append(boxes[i][k])
        return np.stack(rows), winners

    def predict_proba(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        return self.predictions(images)[0]

    __call__ = predict_proba


def windowed(classifiers: Iterable["Classifier"], tiles: bool = False) -> list[Windowed]:
    """``classifiers`` as :class:`Windowed`: each image they classify (a search's candidates, an
    output's re-upload copies) is also classified in its own views; one without any, as it is."""
    return [Windowed(c, tiles) for c in classifiers]
