"""The tiny-model ConditionalVLM experiment: does CIIT training (eq. 3) lower the answer NLL, and
does the control embedding make the answer name the right category's attributes — w = 1 against
the paper's w = 0 ablation and against a wrong (rotated) control code?

    HF_HUB_OFFLINE=1 .venv/bin/python bench/vlm.py --out bench/results/vlm.md

A tiny InstructBLIP (hidden 32, 2 layers; :mod:`safeview.rationale.tiny`) whose OPT LLM is first
fitted to the question/answer texts (a stand-in for LLM pre-training and BLIP-2 alignment) is
trained with eq. 3 on synthetic stand-in images (:mod:`safeview.synth`) with one answer per
category. Control codes come from ``--models`` when given, else from a simulated classifier (the
image's category at 0.75-1.0, the others at 0-0.3). Two set-ups: ``prior off`` (the bare question,
so the control embedding is the only category channel besides the pixels) and ``prior on`` (the
conditioned prompt also names the flagged category in words). The score is
:func:`safeview.rationale.prompts.attribute_match` on held-out images.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from safeview.rationale.ciit import ConditionalBlip
from safeview.rationale.control import ControlCode
from safeview.rationale.prompts import attribute_match, keyword_hits, load_templates
from safeview.rationale.tiny import SYNTHETIC_ANSWERS, pretrain_language_model, synthetic_records, tiny_instructblip
from safeview.rationale.train import TrainConfig, prepare, train_ciit
from safeview.synth import CATEGORIES


def run(prior: bool, seed: int, args, classifiers) -> dict:
    train = prepare(synthetic_records(args.train, seed=seed, classifiers=classifiers), prior=prior)
    test = prepare(synthetic_records(args.test, seed=1000 + seed, classifiers=classifiers), prior=prior)
    # the LLM knows every prompt and that an answer follows it, not which answer goes with which
    prompts = sorted({d["prompt"] for d in train + test} | set(load_templates().generic))
    texts = [p + " " + a for p in prompts for a in SYNTHETIC_ANSWERS.values()]
    model, processor = tiny_instructblip(texts, seed=seed)
    pretrain_language_model(model, processor, texts, seed=seed)
    ciit = ConditionalBlip(model, processor, CATEGORIES)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        history = train_ciit(ciit, train, out, config=TrainConfig(epochs=args.epochs, batch_size=8, lr=args.lr, warmup=0.05, seed=seed), resume=False)
    seconds = time.perf_counter() - t0
    unsafe = [d for d in test if d["category"]]
    safe = [d for d in test if not d["category"]]

    def rotate(code: ControlCode) -> ControlCode:  # each category gets the next one's probability
        return ControlCode({k: code.probabilities.get(CATEGORIES[(i + 1) % 3], 0.0) for i, k in enumerate(CATEGORIES)})

    def answer(items, guidance=1.0, controls=None):
        controls = controls or [d["control"] for d in items]
        return ciit.generate([d["image"] for d in items], [d["prompt"] for d in items], controls, guidance=guidance, max_new_tokens=16)

    result = {"history": history, "seconds": seconds, "steps": len(history)}
    for name, guidance, controls in (("w=1", 1.0, None), ("w=0.5", 0.5, None), ("w=0", 0.0, None), ("wrong code", 1.0, [rotate(d["control"]) for d in unsafe])):
        answers = answer(unsafe, guidance, controls)
        result[name] = float(np.mean([attribute_match(a, d["category"]) for a, d in zip(answers, unsafe)]))
    safe_answers = answer(safe)
    result["safe quiet"] = float(np.mean([not any(keyword_hits(a).values()) for a in safe_answers]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=32, help="training images per class (3 categories + safe)")
    parser.add_argument("--test", type=int, default=10, help="held-out images per class")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=3e-3, help="the tiny model needs more than the paper's 5e-5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default=None, help="model set for the control codes (default: simulated classifier)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vlm.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    classifiers = None
    if args.models:
        from safeview.classify import load_model_set

        classifiers = load_model_set(args.models)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {(prior, s): run(prior, s, args, classifiers) for prior in (False, True) for s in seeds}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for (prior, s), r in results.items():
        ax.plot(r["history"], lw=0.8, label=f"prior {'on' if prior else 'off'}, seed {s}")
    ax.set_xlabel("step")
    ax.set_ylabel("answer NLL (eq. 3)")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    fig.tight_layout()
    png = args.out.with_name("vlm_loss.png")
    fig.savefig(png, dpi=120)

    lines = [
        "# ConditionalVLM on a tiny InstructBLIP (synthetic stand-ins)",
        "",
        f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python bench/vlm.py --train {args.train} --test {args.test} --epochs {args.epochs} --lr {args.lr:g} --seeds {args.seeds}"
        + (f" --models {args.models}" if args.models else "") + "`",
        f"Machine: {platform.processor() or platform.machine()}, 1 torch thread; torch {torch.__version__}, transformers {__import__('transformers').__version__}.",
        f"Control codes: {'classifiers ' + args.models if args.models else 'simulated classifier (flagged category 0.75-1.0, others 0-0.3)'}.",
        f"Data: {4 * args.train} training and {4 * args.test} held-out images ({args.test * 3} unsafe scored), one answer per category, generic questions.",
        "",
        "Attribute-match rate on held-out unsafe images (the answer names its category's attributes, not another's);",
        "'safe quiet' = safe images whose answer names no unsafe attribute. Mean over seeds (min-max).",
        "",
        "| prior | NLL first 10 steps | NLL last 10 steps | w=1 | w=0.5 | w=0 (ablation) | wrong code | safe quiet | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for prior in (False, True):
        rs = [results[(prior, s)] for s in seeds]

        def cell(key, rs=rs):
            v = [r[key] for r in rs]
            return f"{np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f})"

        lines.append(
            f"| {'on' if prior else 'off'} | {np.mean([np.mean(r['history'][:10]) for r in rs]):.3f} | {np.mean([np.mean(r['history'][-10:]) for r in rs]):.3f} | "
            + " | ".join(cell(k) for k in ("w=1", "w=0.5", "w=0", "wrong code", "safe quiet"))
            + f" | {np.mean([r['seconds'] for r in rs]):.1f} |"
        )
    curve = results[(False, seeds[0])]["history"]
    per_epoch = np.array_split(np.array(curve), args.epochs)
    lines += [
        "",
        f"Loss curve ({png.name}); prior off, seed {seeds[0]}, mean NLL per epoch: " + ", ".join(f"{np.mean(e):.3f}" for e in per_epoch) + ".",
        "",
        f"![loss]({png.name})",
        "",
        "With the prior off, only the control embedding tells the model the category (the tiny vision encoder is frozen and",
        "random), so w = 0 and a wrong control code lose it. With the prior on, the conditioned prompt names the category",
        "in words too, which the LLM can read, so w = 0 keeps much of the effect: the paper's ablation varies only the",
        "embedding. 'wrong code' rotates the categories of the code fed to the embedding only (the prompt keeps the",
        "classifiers' code), and the embedding wins. These are mechanism checks on a toy model, not a measure of rationale quality on real images.",
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
