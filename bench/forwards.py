"""What one forward costs on this CPU, per backend, for the two ResNet-50s SafeView meets: Open-NSFW
(the default model; torch module from ``safeview.onnxnet`` against onnxruntime on the same graph)
and torchvision's ResNet-50 (a user's checkpoint; fp32, channels-last, BatchNorm folded, bf16
autocast, and onnxruntime on its ONNX export), batch 1 and 8, and a FullGrad-style
forward+backward in fp32 and bf16. Each backend's largest difference from the fp32 torch logits is
reported next to its time: only a backend that computes the same logits may serve verification.

    python bench/forwards.py --threads 2 --repeat 15 --out bench/results/forwards.md
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import emit  # noqa: E402


def median_ms(run: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    run()
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), min(times), max(times)


def ort_session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def folded(module: torch.nn.Module) -> torch.nn.Module:
    """torchvision ResNet with every Conv→BatchNorm pair folded into one conv (eval mode)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module = copy.deepcopy(module).eval()
    for parent in module.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                parent._modules[a], parent._modules[b] = fuse_conv_bn_eval(conv, bn), torch.nn.Identity()
    return module


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

    load_before = os.getloadavg()[0]
    graph = logit_graph(onnx.load(onnx_path()))
    nsfw = convert(graph)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None, num_classes=2).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(resnet, torch.zeros(1, 3, 224, 224), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}})
    sessions = {"open-nsfw": ort_session(graph.SerializeToString(), args.threads),
                "resnet50": ort_session(buffer.getvalue(), args.threads)}
    fused = folded(resnet)
    rng = np.random.default_rng(0)
    rows = []
    for name, module in (("open-nsfw", nsfw), ("resnet50", resnet)):
        session = sessions[name]
        for batch in (1, 8):
            x = torch.from_numpy(rng.normal(0, 1 if name == "resnet50" else 50, (batch, 3, 224, 224)).astype(np.float32))
            with torch.inference_mode():
                reference = module(x).float()
            backends: dict[str, Callable[[], torch.Tensor]] = {"torch fp32": lambda: module(x)}
            if name == "resnet50":
                backends["torch fp32, channels-last"] = lambda: module(x.contiguous(memory_format=torch.channels_last))
                backends["torch fp32, BatchNorm folded"] = lambda: fused(x)
            backends["torch bf16 autocast"] = lambda: _bf16(module, x)
            backends["onnxruntime fp32"] = lambda: torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
            if name == "resnet50":
                module.to(memory_format=torch.contiguous_format)
            for backend, run in backends.items():
                if "channels-last" in backend:
                    module.to(memory_format=torch.channels_last)
                with torch.inference_mode():
                    diff = float((run().float() - reference).abs().max())
                    ms = median_ms(run, args.repeat)
                module.to(memory_format=torch.contiguous_format)
                rows.append((name, batch, backend, ms, diff))
                print(rows[-1], flush=True)
        x = torch.from_numpy(rng.normal(0, 1, (1, 3, 224, 224)).astype(np.float32))
        for backend, autocast in (("forward+backward fp32", False), ("forward+backward bf16 autocast", True)):
            rows.append((name, 1, backend, median_ms(lambda: _grad(module, x, autocast), args.repeat), None))
            print(rows[-1], flush=True)
    lines = [
        "# One forward per backend",
        "",
        f"Command: `python bench/forwards.py {' '.join(sys.argv[1:])}` ({platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after). Milliseconds per call, median of {args.repeat} (min–max); "
        "difference: the largest absolute difference from the fp32 torch logits.",
        "",
        "| model | batch | backend | ms | max logit difference |",
        "|---|---:|---|---:|---:|",
    ]
    for name, batch, backend, (median, low, high), diff in rows:
        lines.append(f"| {name} | {batch} | {backend} | {median:.1f} ({low:.1f}–{high:.1f}) | "
                     f"{'' if diff is None else f'{diff:.1e}'} |")
    emit("\n".join(lines) + "\n", args.out)


def _bf16(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return module(x)


def _grad(module: torch.nn.Module, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        score = module(x)[:, 1].sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad


if __name__ == "__main__":
    main()
