import numpy as np

from safeview.leakage import leakage, summarise_leakage


def test_leakage_figures():
    truth = np.zeros((10, 10), bool)
    truth[:, :5] = True
    mask = np.zeros((10, 10), bool)
    mask[:, :4] = True
    image = np.zeros((10, 10, 3), np.uint8)
    output = image.copy()
    output[mask] = 255
    output[0, 9] = 1  # one safe pixel altered
    row = leakage(mask, truth, image, output)
    assert row["recall"] == 0.8 and row["area_ratio"] == 0.8 and row["precision"] == 1.0
    assert row["safe_identical"] == 49 / 50


def test_leak_rate_counts_only_outputs_reported_safe():
    rows = [
        {"recall": 0.5, "area_ratio": 0.5, "safe_identical": 1.0, "reported_safe": True},
        {"recall": 1.0, "area_ratio": 1.2, "safe_identical": 0.9, "reported_safe": True},
        {"recall": 0.1, "area_ratio": 9.0, "safe_identical": 0.0, "reported_safe": False},
    ]
    s = summarise_leakage(rows)
    assert s["reported_safe"] == 2 and s["leaks"] == 1 and s["leak_rate"] == 0.5
    assert s["recall_median"] == 0.75 and s["area_ratio_median"] == 0.85
    assert summarise_leakage([])["leak_rate"] is None
