"""The tiny-model ConditionalVLM experiment: does CIIT training (eq. 3) lower the answer NLL, and
does the control embedding make the answer name the right category's attributes — w = 1 against
the paper's w = 0 ablation and against a wrong (rotated) control code?

    HF_HUB_OFFLINE=1 .venv/bin/python bench/vlm.py --out bench/results/vlm.md
    HF_HUB_OFFLINE=1 .venv/bin/python bench/vlm.py --models simulated --out bench/results/vlm_wiring.md

A tiny InstructBLIP (hidden 32, 2 layers; :mod:`safeview.rationale.tiny`) whose OPT LLM is first
fitted to the question/answer texts (a stand-in for LLM pre-training and BLIP-2 alignment) is
trained with eq. 3 on synthetic stand-in images (:mod:`safeview.synth`, 256², each with a drawn
stand-in of its category, or none for the safe class) with one answer per category.

Control codes come from ``--models`` (default ``demo``: the three demo classifiers, run on each
image, so the code carries what a real classifier sees in the pixels, errors included: the weak
cyberbullying model gives 0.5-0.75 to many images of other categories and to safe ones). The tiny
vision encoder is frozen and random, so the pixels reach the answer only through that code: the
experiment measures whether the control embedding carries a real classifier's decision into the
answer. ``--models simulated`` draws the code from the image's *label* (its category at 0.75-1.0,
the others at 0-0.3): then the answer can only look the label up, and the run is a wiring check
of the control embedding, not a measurement. Two set-ups: ``prior off`` (the bare question, so
the control embedding is the only category channel) and ``prior on`` (the conditioned prompt also
names the flagged categories in words). The score is
:func:`safeview.rationale.prompts.attribute_match` on held-out images; the table also says how
often the code's most probable category is the image's own (what the code can carry at best).
"""

from __future__ import annotations

import argparse
import os
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


def code_quality(test: list[dict]) -> dict:
    """What the control codes of the held-out images carry: the share of unsafe images whose most
    probable category is their own, and of safe images with some category flagged (>= 0.5)."""
    unsafe = [d for d in test if d["category"]]
    safe = [d for d in test if not d["category"]]
    probs = lambda d: d["control"].probabilities if isinstance(d["control"], ControlCode) else dict(d["control"])  # noqa: E731
    top = [max(probs(d).items(), key=lambda kv: kv[1])[0] == d["category"] for d in unsafe]
    flagged = [any(p >= 0.5 for p in probs(d).values()) for d in safe]
    return {"code top = truth": float(np.mean(top)) if top else 0.0, "safe flagged by code": float(np.mean(flagged)) if flagged else 0.0}


def run(prior: bool, seed: int, args, classifiers) -> dict:
    train = prepare(synthetic_records(args.train, seed=seed, classifiers=classifiers, size=args.size), prior=prior)
    test = prepare(synthetic_records(args.test, seed=1000 + seed, classifiers=classifiers, size=args.size), prior=prior)
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

    result = {"history": history, "seconds": seconds, "steps": len(history), **code_quality(test)}
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
    parser.add_argument("--models", default="demo",
                        help="model set whose outputs on each image are the control codes (default: demo); "
                        "'simulated': codes drawn from the label, a wiring check only")
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic images (the demo models saw 256²)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vlm.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    t_start, load_start = time.perf_counter(), os.getloadavg()
    classifiers = None
    simulated = args.models == "simulated"
    if not simulated:
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
    png = args.out.with_name(f"{args.out.stem}_loss.png")
    fig.savefig(png, dpi=120)

    title = ("Wiring check of the control embedding (codes simulated from the label, not a measurement)" if simulated
             else f"ConditionalVLM on a tiny InstructBLIP, control codes from the {args.models} classifiers on synthetic stand-ins")
    lines = [
        f"# {title}",
        "",
        f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python bench/vlm.py --train {args.train} --test {args.test} --epochs {args.epochs} --lr {args.lr:g} --seeds {args.seeds}"
        f" --models {args.models} --size {args.size} --out {args.out}`",
        f"Machine: {platform.processor() or platform.machine()}, 1 torch thread; torch {torch.__version__}, transformers {__import__('transformers').__version__}; "
        f"{time.perf_counter() - t_start:.0f} s wall, load average {' / '.join(f'{x:.2f}' for x in load_start)} (1/5/15 min) at the start, "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.",
        "Control codes: " + ("simulated from each image's label (its category 0.75-1.0, the others 0-0.3): the answer can only look the label up."
                             if simulated else f"the {args.models} classifiers' unsafe probabilities on each image."),
        f"Data: {4 * args.train} training and {4 * args.test} held-out images ({args.size}², {args.test * 3} unsafe scored), one answer per category, generic questions.",
        "",
        "Attribute-match rate on held-out unsafe images (the answer names its category's attributes, not another's);",
        "'safe quiet' = safe images whose answer names no unsafe attribute; 'code top = truth' = unsafe images whose control code's",
        "most probable category is their own; 'safe flagged' = safe images whose code flags some category (>= 0.5). Mean over seeds (min-max).",
        "",
        "| prior | NLL first 10 steps | NLL last 10 steps | code top = truth | safe flagged by code | w=1 | w=0.5 | w=0 (ablation) | wrong code | safe quiet | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for prior in (False, True):
        rs = [results[(prior, s)] for s in seeds]

        def cell(key, rs=rs):
            v = [r[key] for r in rs]
            return f"{np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f})"

        lines.append(
            f"| {'on' if prior else 'off'} | {np.mean([np.mean(r['history'][:10]) for r in rs]):.3f} | {np.mean([np.mean(r['history'][-10:]) for r in rs]):.3f} | "
            + " | ".join(cell(k) for k in ("code top = truth", "safe flagged by code", "w=1", "w=0.5", "w=0", "wrong code", "safe quiet"))
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
        "random), so w = 0 and a wrong control code lose it. With the prior on, the conditioned prompt names the flagged",
        "categories in words too, which the LLM can read, so w = 0 keeps part of the effect: the paper's ablation varies only the",
        "embedding. 'wrong code' rotates the categories of the code fed to the embedding only (the prompt keeps the",
        "classifiers' code).",
        ("With codes simulated from the label, a match rate of 1.00 shows only that the embedding is wired to the answer."
         if simulated else
         "The codes come from real (demo) classifiers run on the images, so an answer is right only where the classifier saw the stand-in;"
         " the demo classifiers are trained on the same synthetic stand-ins, and the answers are one fixed sentence per category,"
         " so this measures the control channel on a toy model, not rationale quality on real images."),
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
