"""safeview.batch: manifests, resume without rescans, error rows, local == Ray results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from safeview.batch import OBFUSCATED_DIR, read_parts, read_results, run_batch  # noqa: E402
from safeview.errors import SafeViewError  # noqa: E402

N_IMAGES = 30
GUARD = {"segmentation": "slic", "max_regions": 4, "segmentation_params": {"n_segments": 16}}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Synthetic-benchmark images (benign backgrounds, drawn stand-ins) in nested folders, plus one
    byte-identical copy of the first image under another name."""
    from safeview.synth import CATEGORIES, make_sample

    root = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(N_IMAGES):
        sample = make_sample(CATEGORIES[i % len(CATEGORIES)], unsafe=i % 2 == 0, seed=i, size=64)
        path = root / f"sub{i % 2}" / f"img{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(sample.image).save(path)
        paths.append(path)
    copy = root / "copy_of_img00.png"
    copy.write_bytes(paths[0].read_bytes())
    return root, paths, copy


@pytest.fixture(scope="module")
def models(images):
    """A tiny seeded CNN whose unsafe-logit bias is set so that about half the images are unsafe
    (a mix of safe and unsafe verdicts, so CSE runs on some images only)."""
    import torch

    from safeview import nets
    from safeview.classify import Classifier, Preprocess

    torch.manual_seed(0)
    clf = Classifier.from_module(
        nets.build("small", 2, width=8), ["safe", "unsafe"], ["unsafe"], name="tiny", category="sexual",
        preprocess=Preprocess(resize=(48, 48)),
    )
    _, paths, _ = images
    with torch.no_grad():
        logits = clf.logits(clf.tensor([np.asarray(Image.open(p).convert("RGB")) for p in paths])).numpy()
        clf.module.fc.bias[1] -= float(np.median(logits[:, 1] - logits[:, 0])) + 1e-3
    return [clf]


def _comparable(table) -> list[tuple]:
    """What must not depend on the engine: verdict, confidences, mask and rationale per path."""
    rows = table.select(["path", "sha256", "verdict", "confidences", "mask_rle", "rationale", "error", "duplicate"]).to_pylist()
    return [tuple(json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v for v in row.values()) for row in rows]


def test_bad_files_become_error_rows_and_manifest_runs(images, models, tmp_path):
    _, paths, _ = images
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    manifest = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": [str(p) for p in (paths[1], broken, empty, missing)]}), manifest)

    summary = run_batch(manifest, tmp_path / "out", models=models, workers=1, batch_size=2, **GUARD)
    rows = {r["path"]: r for r in read_results(tmp_path / "out").to_pylist()}
    assert len(rows) == 4 and summary["failed"] == 3 and summary["scanned"] == 3
    assert rows[str(paths[1])]["error"] is None and rows[str(paths[1])]["verdict"] in ("safe", "unsafe")
    assert "not a recognised image" in rows[str(broken)]["error"]
    assert "empty file" in rows[str(empty)]["error"]
    assert "no such file" in rows[str(missing)]["error"] and rows[str(missing)]["sha256"] is None
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["failed"] == 3


def test_resume_after_interruption_matches_uninterrupted_run(images, models, tmp_path):
    root, paths, copy = images
    full = run_batch(root, tmp_path / "full", models=models, workers=2, batch_size=3, **GUARD)
    assert full["inputs"] == N_IMAGES + 1 and full["unique"] == N_IMAGES and full["scanned"] == N_IMAGES

    def stop_after_first_chunk(done, total):
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(root, tmp_path / "resumed", models=models, workers=1, batch_size=3, progress=stop_after_first_chunk, **GUARD)
    partial = read_parts(tmp_path / "resumed")
    assert 0 < partial.num_rows < N_IMAGES + 1  # something was kept, not everything was done

    again = run_batch(root, tmp_path / "resumed", models=models, workers=1, batch_size=3, **GUARD)
    assert again["skipped"] == partial.num_rows and again["scanned"] == N_IMAGES - len(set(partial.column("sha256").to_pylist()))
    assert _comparable(read_results(tmp_path / "resumed")) == _comparable(read_results(tmp_path / "full"))

    # every file was scanned exactly once over both runs; the copy is reported from its twin's scan
    parts = read_parts(tmp_path / "resumed").to_pylist()
    scanned = [r["sha256"] for r in parts if not r["duplicate"]]
    assert len(scanned) == len(set(scanned)) == N_IMAGES
    rows = {r["path"]: r for r in read_results(tmp_path / "resumed").to_pylist()}
    assert rows[str(copy)]["sha256"] == rows[str(paths[0])]["sha256"]
    assert rows[str(copy)]["duplicate"] != rows[str(paths[0])]["duplicate"]

    rerun = run_batch(root, tmp_path / "resumed", models=models, workers=1, batch_size=3, **GUARD)
    assert rerun["scanned"] == 0 and rerun["skipped"] == N_IMAGES + 1
    assert read_parts(tmp_path / "resumed").num_rows == len(parts)


def test_outputs_follow_the_scan_result_schema(images, models, tmp_path):
    from safeview.schema import ScanResult

    root, _, _ = images
    summary = run_batch(str(root / "sub0" / "*.png"), tmp_path / "out", models=models, workers=1, batch_size=4, **GUARD)
    table = pq.read_table(tmp_path / "out" / "results.parquet")
    assert table.num_rows == N_IMAGES // 2 and sum(summary["verdicts"].values()) == N_IMAGES // 2
    for row in table.to_pylist():
        result = ScanResult.model_validate_json(row["result_json"])
        assert result.verdict == row["verdict"] and result.input.sha256 == row["sha256"]
        assert dict(row["confidences"]) == {c.category: c.unsafe_probability for c in result.categories}
        if row["verdict"] == "unsafe":
            obfuscated = tmp_path / "out" / row["obfuscated"]
            suffix = "safe.png" if result.obfuscated_safe else "not-verified.png"  # never "safe" unverified
            assert obfuscated.name == f"{row['sha256']}.{suffix}" and obfuscated.is_file()
            mask = result.mask.to_mask()
            assert mask.any() and json.loads(row["mask_rle"])["counts"] == result.mask.counts
            assert np.asarray(Image.open(obfuscated)).shape == mask.shape + (3,)
        else:
            assert row["obfuscated"] is None and row["mask_rle"] is None
    assert summary["verdicts"].get("unsafe", 0) == summary["unsafe_categories"].get("sexual", 0)


def test_only_unsafe_keeps_full_json_for_unsafe_rows_only(images, models, tmp_path):
    root, _, _ = images
    run_batch(root, tmp_path / "out", models=models, workers=1, only_unsafe=True, **GUARD)
    rows = read_results(tmp_path / "out").to_pylist()
    assert {r["verdict"] for r in rows} == {"safe", "unsafe"}
    assert all((r["result_json"] is None) == (r["verdict"] == "safe") for r in rows)
    assert all(r["confidences"] for r in rows)  # the summary columns stay for every row


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    assert not ray.is_initialized()


def test_ray_engine_gives_the_local_results(images, models, ray_local, tmp_path):
    root, _, _ = images
    local = run_batch(root, tmp_path / "local", models=models, workers=2, batch_size=4, **GUARD)
    remote = run_batch(root, tmp_path / "ray", engine="ray", models=models, workers=2, batch_size=4, **GUARD)
    assert remote["scanned"] == local["scanned"] == N_IMAGES and remote["verdicts"] == local["verdicts"]
    assert 0 < local["verdicts"].get("unsafe", 0) < N_IMAGES  # both kinds of verdict were compared
    assert _comparable(read_results(tmp_path / "ray")) == _comparable(read_results(tmp_path / "local"))
    assert sorted(p.name for p in (tmp_path / "ray" / "obfuscated").iterdir()) == sorted(
        p.name for p in (tmp_path / "local" / "obfuscated").iterdir()
    )
    assert ray_local.is_initialized()  # run_batch leaves a runtime it did not start running


def test_ray_actor_that_cannot_load_its_models_stops_the_run_with_one_line(images, ray_local, tmp_path):
    bad = tmp_path / "bad.safeview"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SafeViewError, match="bad.safeview: not a readable SafeView checkpoint"):
        run_batch(images[0], tmp_path / "out", engine="ray", models=str(bad), workers=1, batch_size=8)
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_cli_batch_resumes_and_reports(images, models, tmp_path):
    from typer.testing import CliRunner

    from safeview.cli import app

    _, paths, _ = images
    checkpoint = models[0].save(tmp_path / "tiny.safeview", arch="small", arch_kwargs={"width": 8})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(p)}) + "\n" for p in paths[:3]))
    args = ["batch", str(manifest), "--out", str(tmp_path / "out"), "--models", str(checkpoint), "--workers", "1", "--segmentation", "slic"]
    first = CliRunner().invoke(app, args)
    summary = json.loads(first.stdout)
    assert summary["scanned"] == 3
    assert first.exit_code == (1 if summary["verdicts"].get("unsafe") else 0), first.output  # 1: something is unsafe
    second = CliRunner().invoke(app, args)
    assert second.exit_code == first.exit_code and json.loads(second.stdout)["skipped"] == 3
    bad = CliRunner().invoke(app, [*args[:4], "--engine", "spark"])
    assert bad.exit_code == 2 and "--engine" in bad.output


def test_cli_batch_input_that_names_no_image_is_an_error(images, models, tmp_path):
    """A missing file or an empty folder among the inputs used to exit 0 (or 1), with the error
    only inside the summary, where `scan` exits 2 and says so on stderr."""
    from typer.testing import CliRunner

    from safeview.cli import app

    _, paths, _ = images
    checkpoint = models[0].save(tmp_path / "tiny.safeview", arch="small", arch_kwargs={"width": 8})
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, [
        "batch", str(paths[1]), str(tmp_path / "missing.png"), str(tmp_path / "empty"), "--out", str(tmp_path / "out"),
        "--models", str(checkpoint), "--workers", "1", "--segmentation", "slic",
    ])
    assert result.exit_code == 2, result.output
    summary = json.loads(result.stdout)
    assert summary["scanned"] == 1 and len(summary["input_errors"]) == 2
    assert "missing.png: no such file" in result.output and "empty: folder holds no image files" in result.output


def test_output_folder_inside_the_inputs_is_not_scanned_again(images, models, tmp_path):
    """``OUT/obfuscated/*.png`` inside the scanned folder used to become new inputs of the rerun."""
    _, paths, _ = images
    folder = tmp_path / "in"
    folder.mkdir()
    for path in paths[:10]:
        (folder / path.name).write_bytes(path.read_bytes())
    first = run_batch(folder, folder / "out", models=models, workers=1, batch_size=5, **GUARD)
    assert first["inputs"] == 10 and list((folder / "out" / OBFUSCATED_DIR).glob("*.png"))  # something to rescan
    again = run_batch(folder, folder / "out", models=models, workers=1, batch_size=5, **GUARD)
    assert again["inputs"] == 10 and again["scanned"] == 0 and again["skipped"] == 10
    with pytest.raises(SafeViewError, match="output folder"):
        run_batch(folder, folder, models=models, workers=1, **GUARD)
