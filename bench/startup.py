"""Start-up cost: ``safeview --help``, ``import safeview``, and importing the pipeline and loading a
model set (``Safeguard("default")``, ``Safeguard("demo")``), each in a fresh process, median of
``--repeat`` runs; with ``--compare DIR`` the same in the same run for another checkout's ``src``
(e.g. a ``git worktree`` of an older commit), interleaved run by run so the machine's load falls on
both alike.

    python bench/startup.py --repeat 7 --compare /tmp/safeview-before --out bench/results/startup.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import emit  # noqa: E402

CASES = {
    "safeview --help": ["-m", "safeview", "--help"],
    "import safeview": ["-c", "import safeview"],
    "import + Safeguard('default')": ["-c", "from safeview.pipeline import Safeguard; Safeguard('default', attributes=[])"],
    "import + Safeguard('demo')": ["-c", "from safeview.pipeline import Safeguard; Safeguard('demo', attributes=[])"],
}


def timed(args: list[str], src: Path | None, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def describe(src: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(src), "log", "-1", "--format=%h"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(src)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare", type=Path, default=None, help="another checkout whose src/ is timed alongside")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = {describe(here): here / "src"}
    if args.compare is not None:
        trees = {describe(args.compare): args.compare.resolve() / "src", **trees}
    load_before = os.getloadavg()[0]
    for args_ in CASES.values():  # warm the file cache
        for src in trees.values():
            timed(args_, src, args.threads)
    seconds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for case, args_ in CASES.items():
            for name, src in trees.items():
                seconds.setdefault((case, name), []).append(timed(args_, src, args.threads))
    names = list(trees)
    lines = [
        "# Start-up",
        "",
        f"Command: `python bench/startup.py {' '.join(sys.argv[1:])}` ({platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after). "
        f"Seconds per fresh process, median of {args.repeat} (min–max), checkouts interleaved.",
        "",
        "| | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else ""),
        "|---|" + "---:|" * (len(names) + (len(names) == 2)),
    ]
    for case in CASES:
        cells = [seconds[(case, n)] for n in names]
        row = f"| {case} | " + " | ".join(f"{statistics.median(c):.2f} ({min(c):.2f}–{max(c):.2f})" for c in cells)
        if len(names) == 2:
            row += f" | {statistics.median(cells[0]) / statistics.median(cells[1]):.1f}×"
        lines.append(row + " |")
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
