"""What one forward costs on this CPU, per backend, for the two ResNet-50s SafeView meets: Open-NSFW
(the default model: the torch module from ``safeview.onnxnet`` against the onnxruntime session
SafeView predicts with) and torchvision's ResNet-50 (a user's checkpoint: fp32, channels-last,
bf16 autocast, SafeView's ``TorchRuntime`` (onnxruntime on the module's ONNX export) and the folded
channels-last copy it falls back to), and the small demo CNN; batch 1 and 8, and a FullGrad-style forward+backward in
fp32 and bf16. Each backend's largest difference from the fp32 torch module's probabilities is
reported next to its time: only a backend that computes the same scores may serve verification.

    python bench/forwards.py --threads 2 --repeat 15 --out bench/results/forwards.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import emit  # noqa: E402

from safeview.runtime import TorchRuntime  # noqa: E402


def median_ms(run: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    run()
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnx
    import torchvision

    from safeview.onnxnet import convert
    from safeview.opennsfw import logit_graph, onnx_path

    from safeview.classify import load_classifier
    from safeview.opennsfw import _session

    load_before = os.getloadavg()[0]
    nsfw = convert(logit_graph(onnx.load(onnx_path())))
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None, num_classes=2).eval()
    demo = load_classifier("demo-sexual")
    runtimes = {
        "open-nsfw": {"onnxruntime (SafeView's predictions)": _session(str(onnx_path()))},
        "resnet50": {"SafeView TorchRuntime (onnxruntime on its export)": TorchRuntime(resnet, (224, 224)),
                     "folded, channels-last copy (TorchRuntime's fallback)": _folded(resnet, 224)},
        "demo-sexual": {"SafeView TorchRuntime (onnxruntime on its export)": demo.runtime,
                        "folded, channels-last copy (TorchRuntime's fallback)": _folded(demo.module, 128)},
    }
    rng = np.random.default_rng(0)
    rows = []
    for name, module, size, spread in (("open-nsfw", nsfw, 224, 50), ("resnet50", resnet, 224, 1),
                                       ("demo-sexual", demo.module, 128, 1)):
        for batch in (1, 8):
            x = torch.from_numpy(rng.normal(0, spread, (batch, 3, size, size)).astype(np.float32))
            backends: dict[str, Callable[[], np.ndarray]] = {"torch fp32": lambda: _run(module, x)}
            if name == "resnet50":
                backends["torch fp32, channels-last input and weights"] = lambda: _run(resnet, x.contiguous(memory_format=torch.channels_last))
            backends["torch bf16 autocast"] = lambda: _run(module, x, bf16=True)
            for label, runtime in runtimes[name].items():
                backends[label] = lambda runtime=runtime: runtime(x.numpy())
            reference = _softmax(backends["torch fp32"]())
            for backend, run in backends.items():
                if "channels-last input" in backend:
                    resnet.to(memory_format=torch.channels_last)
                diff = float(np.abs(_softmax(run()) - reference).max())
                ms = median_ms(run, args.repeat)
                resnet.to(memory_format=torch.contiguous_format)
                rows.append((name, batch, backend, ms, diff))
                print(rows[-1], flush=True)
        x = torch.from_numpy(rng.normal(0, spread, (1, 3, size, size)).astype(np.float32))
        for backend, autocast in (("forward+backward fp32", False), ("forward+backward bf16 autocast", True)):
            rows.append((name, 1, backend, median_ms(lambda: _grad(module, x, autocast), args.repeat), None))
            print(rows[-1], flush=True)
    lines = [
        "# One forward per backend",
        "",
        f"Command: `python bench/forwards.py {' '.join(sys.argv[1:])}` ({platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after). Milliseconds per call, median of {args.repeat} (min–max); "
        "difference: the largest absolute difference from the fp32 torch module's probabilities.",
        "",
        "| model | batch | backend | ms | max probability difference |",
        "|---|---:|---|---:|---:|",
    ]
    for name, batch, backend, (median, low, high), diff in rows:
        lines.append(f"| {name} | {batch} | {backend} | {median:.1f} ({low:.1f}–{high:.1f}) | "
                     f"{'' if diff is None else f'{diff:.1e}'} |")
    emit("\n".join(lines) + "\n", args.out)


def _folded(module: torch.nn.Module, size: int) -> Callable[[np.ndarray], np.ndarray]:
    """The copy ``TorchRuntime`` serves where the export fails, called as a runtime is."""
    fast = TorchRuntime(module, (size, size))._fold()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return fast(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)).float().numpy()

    return run


def _run(module: torch.nn.Module, x: torch.Tensor, bf16: bool = False) -> np.ndarray:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return module(x).float().numpy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _grad(module: torch.nn.Module, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        score = module(x)[:, 1].sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad


if __name__ == "__main__":
    main()
