"""What a flagged image's scan costs in one process, most of it the attribute detectors' passes
(the original, then the second opinion on the output and its six re-upload copies), and what those
passes read, so that two checkouts can be compared on the same images (issue 18).

For ``--images`` synthetic stand-ins (sexual, cyberbullying and self-harm in turn, held-out seeds
from 7000000, 256²): seconds of ``second_opinion(image, copies=SECOND_OPINION_COPIES)`` on the image
itself (the cost of one output's second opinion) and of a whole ``Safeguard(--models).scan``, each
after one untimed warm-up; the texts every pass read and each scan's verdict, regions and output
status go into the JSON, so ``--same-as`` can say whether another checkout's run read and decided
the same. Run the other checkout with its ``src`` on ``PYTHONPATH`` (this script adds none):

    PYTHONPATH=/tmp/wt-old/src python bench/opinion.py --out /tmp/opinion-old.json
    PYTHONPATH=src python bench/opinion.py --out bench/results/opinion.json --same-as /tmp/opinion-old.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=9)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", default="demo")
    parser.add_argument("--threads", type=int, default=2, help="threads of this process (torch, numba, detectors)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--same-as", type=Path, default=None, help="another run's JSON: are the reads and decisions the same?")
    args = parser.parse_args()

    from safeview.threads import set_threads

    set_threads(args.threads)
    import safeview
    from safeview.attributes import SECOND_OPINION_COPIES, second_opinion
    from safeview.pipeline import Safeguard
    from safeview.synth import make_sample

    kinds = ("sexual", "cyberbullying", "self_harm")
    images = [make_sample(kinds[i % 3], True, seed=7_000_000 + i, size=args.size).image for i in range(args.images)]
    guard = Safeguard(args.models)
    second_opinion(images[0], copies=SECOND_OPINION_COPIES)
    guard.scan(images[0])
    load_start = os.getloadavg()[0]

    opinion_s, scan_s, reads, decisions = [], [], [], []
    for image in images:
        t = time.perf_counter()
        opinion = second_opinion(image, copies=SECOND_OPINION_COPIES)
        opinion_s.append(time.perf_counter() - t)
        reports = {"output": opinion.report, **opinion.copy_reports}
        reads.append({name: sorted(a.text or a.name for a in report.attributes) for name, report in reports.items()})
        t = time.perf_counter()
        result = guard.scan(image)
        scan_s.append(time.perf_counter() - t)
        decisions.append({
            "verdict": result.verdict, "output_status": result.output_status,
            "regions": {cf.category: cf.regions for cf in result.counterfactuals},
            "second_opinion": None if result.verification is None or result.verification.second_opinion is None
            else result.verification.second_opinion.passed,
        })

    report = {
        "command": " ".join(["python", *sys.argv]), "safeview": str(Path(safeview.__file__).parent),
        "threads": args.threads, "load_average_start": load_start, "load_average_end": os.getloadavg()[0],
        "second_opinion_s": {"median": statistics.median(opinion_s), "all": opinion_s},
        "scan_s": {"median": statistics.median(scan_s), "all": scan_s},
        "reads": reads, "decisions": decisions,
    }
    if args.same_as is not None:
        other = json.loads(args.same_as.read_text())
        report["same_as"] = {"file": str(args.same_as), "reads": other["reads"] == reads, "decisions": other["decisions"] == decisions,
                             "second_opinion_ratio": other["second_opinion_s"]["median"] / report["second_opinion_s"]["median"],
                             "scan_ratio": other["scan_s"]["median"] / report["scan_s"]["median"]}
    text = json.dumps(report, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    summary = {k: report[k] for k in ("load_average_start", "load_average_end")}
    summary.update(second_opinion_s=round(report["second_opinion_s"]["median"], 3), scan_s=round(report["scan_s"]["median"], 3))
    print(json.dumps({**summary, **({"same_as": report["same_as"]} if "same_as" in report else {})}))


if __name__ == "__main__":
    main()
