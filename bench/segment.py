"""Segmentation benchmark: BASS (with and without attribution) against SLIC and Felzenszwalb on CPU.

Times every method on the same images (scikit-image's astronaut, resized) at several sizes,
reports BASS's peak memory against the size of its float32 feature array, numba's compile and
cache-load times, and the ratio to the CUDA reference (0.042 s at 512², GTX 1070, from its README).
Also holds the region-quality metrics (boundary recall, undersegmentation error, achievable
segmentation accuracy) used against ground-truth masks.

    python bench/segment.py --out bench/results/segment.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

CUDA_REFERENCE_S_AT_512 = 0.042  # BGU-CS-VIL/BASS README, GTX 1070


# --- region quality against a ground-truth label image (e.g. a binary mask) ---------------------


def _boundaries(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def boundary_recall(labels: np.ndarray, gt: np.ndarray, tolerance: int = 2) -> float:
    """Fraction of ground-truth boundary pixels within ``tolerance`` px (Chebyshev) of a region boundary."""
    from scipy.ndimage import binary_dilation

    gt_edge = _boundaries(np.asarray(gt))
    if not gt_edge.any():
        return 1.0
    near = binary_dilation(_boundaries(labels), structure=np.ones((2 * tolerance + 1,) * 2, bool))
    return float((near & gt_edge).sum() / gt_edge.sum())


def _overlaps(labels: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(regions × ground-truth segments) pixel counts of their intersections."""
    _, g = np.unique(np.asarray(gt), return_inverse=True)
    g = g.reshape(-1)
    k = int(labels.max()) + 1
    return np.bincount(labels.reshape(-1).astype(np.int64) * (g.max() + 1) + g, minlength=k * (g.max() + 1)).reshape(
        k, g.max() + 1
    )


def undersegmentation_error(labels: np.ndarray, gt: np.ndarray) -> float:
    """Neubert–Protzel undersegmentation error: Σ over regions and segments of min(in, out) / pixels."""
    overlap = _overlaps(labels, gt)
    size = overlap.sum(axis=1, keepdims=True)
    return float(np.minimum(overlap, size - overlap)[overlap > 0].sum() / labels.size)


def achievable_segmentation_accuracy(labels: np.ndarray, gt: np.ndarray) -> float:
    """Accuracy of the best labelling that is constant on every region (each region takes its majority segment)."""
    return float(_overlaps(labels, gt).max(axis=1).sum() / labels.size)


def emit(text: str, out: Path | None) -> None:
    """Print a benchmark's Markdown and, when asked, write it to ``out``."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


# --- timing ---------------------------------------------------------------------------------------


def _image(size: int) -> np.ndarray:
    from skimage import data, transform

    return (transform.resize(data.astronaut(), (size, size), anti_aliasing=True) * 255).astype(np.uint8)


def _attribution(size: int) -> np.ndarray:
    """A smooth synthetic map standing in for an upsampled Grad-CAM: one Gaussian blob on the face."""
    y, x = np.mgrid[0:size, 0:size] / size
    return np.exp(-((x - 0.45) ** 2 + (y - 0.3) ** 2) / (2 * 0.12**2)).astype(np.float32)


def _methods():
    from skimage.segmentation import felzenszwalb, slic

    from safeview.segment.bass import bass

    return {
        "BASS": lambda im, a: bass(im),
        "BASS + attribution": lambda im, a: bass(im, a),
        "SLIC (25, c=1)": lambda im, a: slic(im, n_segments=25, compactness=1.0, start_label=0),
        "Felzenszwalb (500, 0.5, 200)": lambda im, a: felzenszwalb(im, scale=500, sigma=0.5, min_size=200),
    }


def time_methods(sizes: list[int], repeats: int) -> list[dict]:
    methods = _methods()
    for run in methods.values():  # compile / load numba kernels outside the timings
        run(_image(32), _attribution(32))
    rows = []
    for size in sizes:
        image, attribution = _image(size), _attribution(size)
        for name, run in methods.items():
            times, regions = [], 0
            for _ in range(repeats):
                start = time.perf_counter()
                labels = run(image, attribution)
                times.append(time.perf_counter() - start)
                regions = int(labels.max()) + 1
            rows.append(
                {"size": size, "method": name, "median_s": float(np.median(times)), "min_s": min(times),
                 "max_s": max(times), "regions": regions}
            )
            print(f"{size}² {name}: {rows[-1]['median_s'] * 1000:.0f} ms, {regions} regions", file=sys.stderr)
    return rows


# --- memory and compile time, each measured in a fresh process ------------------------------------


def _child_memory(size: int) -> dict:
    from safeview.segment.bass import bass

    image, attribution = _image(size), _attribution(size)
    bass(_image(16), _attribution(16))  # load kernels
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    bass(image, attribution)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss  # KiB on Linux
    return {"size": size, "tracemalloc_peak_b": peak, "rss_growth_b": rss * 1024, "features_b": size * size * 4 * 4}


def _child_compile() -> dict:
    start = time.perf_counter()
    from safeview.segment.bass import bass

    imported = time.perf_counter() - start
    start = time.perf_counter()
    bass(_image(16), _attribution(16))
    return {"import_s": imported, "first_call_s": time.perf_counter() - start}


def _in_child(task: str, arg: int, env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", task, str(arg)],
        capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, arg = args.child
        print(json.dumps(_child_memory(int(arg)) if task == "memory" else _child_compile()))
        return

    with tempfile.TemporaryDirectory() as cache:
        cold = _in_child("compile", 0, {"NUMBA_CACHE_DIR": cache})
        warm = _in_child("compile", 0, {"NUMBA_CACHE_DIR": cache})
    memory = [_in_child("memory", size) for size in args.sizes]
    rows = time_methods(args.sizes, args.repeats)

    import numba

    lines = [
        "# Segmentation benchmark (CPU)",
        "",
        f"Command: `{' '.join(['python', 'bench/segment.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"numba {numba.__version__} (BASS E-sweeps on {numba.get_num_threads()} threads), load average at start "
        f"{os.getloadavg()[0]:.1f}. Image: scikit-image astronaut resized to each size; attribution: a smooth "
        f"synthetic blob. Times: median of {args.repeats} runs (min–max), after compilation.",
        "",
        "| size | method | median ms | min–max ms | regions |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}² | {r['method']} | {r['median_s'] * 1000:.0f} | "
            f"{r['min_s'] * 1000:.0f}–{r['max_s'] * 1000:.0f} | {r['regions']} |"
        )
    at512 = [r for r in rows if r["size"] == 512 and r["method"] == "BASS"]
    if at512:
        lines += ["", f"BASS at 512² on this CPU is {at512[0]['median_s'] / CUDA_REFERENCE_S_AT_512:.1f}× the CUDA "
                  f"reference's {CUDA_REFERENCE_S_AT_512 * 1000:.0f} ms (GTX 1070, its README; the reference also "
                  "ran on a different image set)."]
    lines += [
        "",
        "BASS + attribution peak memory, each size in a fresh process (features: the H·W·4 float32 array):",
        "",
        "| size | features MiB | NumPy peak (tracemalloc) MiB | process RSS growth MiB |",
        "|---|---:|---:|---:|",
    ]
    for m in memory:
        lines.append(
            f"| {m['size']}² | {m['features_b'] / 2**20:.1f} | {m['tracemalloc_peak_b'] / 2**20:.1f} | "
            f"{m['rss_growth_b'] / 2**20:.1f} |"
        )
    lines += [
        "",
        "tracemalloc sees NumPy allocations only; arrays numba allocates inside kernels show up in the RSS column.",
        "",
        f"numba: importing the module {cold['import_s']:.2f} s; first call compiling every kernel "
        f"{cold['first_call_s']:.1f} s; first call in a second process loading the on-disk cache "
        f"{warm['first_call_s']:.2f} s.",
    ]
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
