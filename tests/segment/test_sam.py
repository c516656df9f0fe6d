"""SAM segmentation on a tiny, randomly initialised SamModel saved in a temporary folder (no
weights are downloaded: the checkpoint is built in code, tests/tiny_sam.py), and on a fake model
whose masks are known."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as cc_label

from safeview.errors import ModelError
from safeview.segment import segment
from tiny_sam import save_tiny_sam

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def assert_partition(labels: np.ndarray, shape) -> None:
    assert labels.dtype == np.int32 and labels.shape == shape
    k = int(labels.max()) + 1
    assert labels.min() == 0 and set(np.unique(labels).tolist()) == set(range(k))
    for r in range(k):
        assert cc_label(labels == r, connectivity=1).max() == 1


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam")
    save_tiny_sam(folder, scale=3.0)
    return folder


@pytest.fixture(scope="module")
def image():
    from skimage import data, transform

    return (transform.resize(data.astronaut(), (48, 72), anti_aliasing=True) * 255).astype(np.uint8)


#: a random model's masks are noise: keep every candidate (no score filter, no box NMS)
LOOSE = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0, "points_per_side": 6,
         "batch_points": 8, "device": "cpu"}


def test_partition_from_masks(tiny_sam, image):
    labels = segment(image, "sam", checkpoint=tiny_sam, min_region=20, **LOOSE)
    assert_partition(labels, image.shape[:2])
    assert labels.max() + 1 >= 2
    assert np.bincount(labels.ravel()).min() >= 20  # small regions were merged away


def test_deterministic_and_attribution_ignored(tiny_sam, image):
    first = segment(image, "sam", checkpoint=tiny_sam, min_region=20, **LOOSE)
    attribution = np.random.default_rng(0).random(image.shape[:2]).astype(np.float32)
    again = segment(image, "sam", checkpoint=str(tiny_sam), attribution=attribution, min_region=20, **LOOSE)
    assert np.array_equal(first, again)


def test_large_image_is_segmented_at_max_side_and_scaled_up(tiny_sam, image):
    labels = segment(image, "sam", checkpoint=tiny_sam, min_region=20, max_side=24, **LOOSE)
    assert_partition(labels, image.shape[:2])
    assert labels.max() + 1 >= 2
    assert np.array_equal(labels[0::3, 0::3], labels[1::3, 1::3])  # 72 -> 24 px: 3×3 blocks


def test_no_mask_passes_the_filters_still_covers_everything(tiny_sam, image):
    labels = segment(image, "sam", checkpoint=tiny_sam, pred_iou_thresh=1e9, points_per_side=2, device="cpu")
    assert_partition(labels, image.shape[:2])
    assert labels.max() == 0  # nothing painted: the whole uncovered image is one region


def test_model_is_cached(tiny_sam):
    from safeview.segment.sam import load_sam

    assert load_sam(tiny_sam, "cpu") is load_sam(str(tiny_sam), "cpu")


def test_bare_model_directory_uses_standard_preprocessing(tmp_path, image):
    save_tiny_sam(tmp_path, scale=3.0, processor=False)
    labels = segment(image, "sam", checkpoint=tmp_path, min_region=10, **LOOSE)
    assert_partition(labels, image.shape[:2])


def test_missing_or_unreadable_checkpoint(tmp_path, image):
    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match="nope: is not a directory; give a local SAM checkpoint") as info:
        segment(image, "sam", checkpoint=missing)
    assert "\n" not in str(info.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="broken: not a readable SAM checkpoint") as info:
        segment(image, "sam", checkpoint=broken)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelError, match="needs a local checkpoint directory: pass checkpoint=PATH"):
        segment(image, "sam")


class FakeSam(torch.nn.Module):
    """Every prompt gets the same three candidates: a big square (IoU 0.95), a small square inside
    it (0.9) and an empty mask (0.99), as 16×16 low-resolution logits of a 64×64 input."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        low = torch.full((3, 16, 16), -100.0)
        low[0, 2:12, 2:14] = 100.0
        low[1, 4:7, 5:9] = 100.0
        self.register_buffer("low", low)

    def get_image_embeddings(self, pixel_values):
        return torch.zeros(1, 4, 4, 4)

    def forward(self, image_embeddings, input_points, input_labels, multimask_output):
        from types import SimpleNamespace

        n = input_points.shape[1]
        return SimpleNamespace(pred_masks=self.low.expand(1, n, 3, 16, 16), iou_scores=torch.tensor([0.95, 0.9, 0.99]).expand(1, n, 3))


def test_masks_painted_largest_first_and_uncovered_pixels_kept(monkeypatch):
    from transformers import SamImageProcessor

    from safeview.segment import sam as sam_module

    processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    monkeypatch.setattr(sam_module, "load_sam", lambda checkpoint, device=None: (FakeSam().eval(), processor))
    image = np.zeros((64, 64, 3), np.uint8)
    labels = segment(image, "sam", checkpoint="unused", points_per_side=3, batch_points=4, min_region=1)
    assert_partition(labels, image.shape[:2])
    assert labels.max() + 1 == 3  # small square on top, the big square's ring, the uncovered frame
    small, ring, frame = labels[22, 27], labels[12, 12], labels[0, 0]
    assert len({small, ring, frame}) == 3
    assert (labels == small).sum() == pytest.approx(12 * 16, rel=0.2)
    assert (labels[10:46, 10:54] != frame).all() and (labels[:6] == frame).all()  # the big square's inside is painted
    # with a min_region larger than the small square, it is merged into the ring around it
    merged = segment(image, "sam", checkpoint="unused", points_per_side=3, min_region=400)
    assert merged.max() + 1 == 2 and merged[22, 27] == merged[12, 12]


def test_merge_small_regions():
    from safeview.segment.sam import merge_small_regions

    labels = np.zeros((10, 10), int)
    labels[:, 5:] = 1
    labels[2:4, 2:4] = 2  # 4 px inside region 0
    labels[0, 9] = 3  # 1 px corner inside region 1
    out = merge_small_regions(labels, 5)
    assert_partition(out, labels.shape)
    assert out.max() == 1 and (out[:, :5] == out[0, 0]).all() and (out[:, 5:] == out[0, 5]).all()
    assert merge_small_regions(labels, 1).max() == 3
    assert merge_small_regions(np.zeros((3, 3), int), 100).max() == 0
