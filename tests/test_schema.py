import json
from pathlib import Path

import numpy as np

from safeview.rationale import ATTRIBUTES
from safeview.schema import RLE, TAXONOMY, json_schema
from safeview.synth import CATEGORIES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "scan-result.schema.json"


def test_published_schema_is_current():
    assert json.loads(DOCS.read_text()) == json_schema(), "regenerate: python -m safeview.schema docs/scan-result.schema.json"


def test_rle_round_trip_and_coco_layout():
    rng = np.random.default_rng(0)
    mask = rng.random((17, 23)) > 0.6
    rle = RLE.from_mask(mask)
    assert rle.size == (17, 23)
    assert np.array_equal(rle.to_mask(), mask)
    assert np.array_equal(RLE.from_mask(np.zeros((4, 4), bool)).to_mask(), np.zeros((4, 4), bool))


def test_every_category_is_mapped():
    for category in CATEGORIES:
        assert category in TAXONOMY and category in ATTRIBUTES
