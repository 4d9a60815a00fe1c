"""Per-call host overhead of the public ops and of the registration routes on a 16-element tensor.

Run:  python -m pytest bench/bench_overhead.py
      python bench/bench_overhead.py [--before DIR] [--rounds 5]
The cases are genkernels/bench/overhead.py's table (the same one `genkernels bench` times). With
--before DIR (a checkout of an older revision with its extensions built, e.g. `git worktree add`
then `pip install -e` there, or `git archive` plus copies of its genkernels/*.so) the table is timed
on DIR and on this tree in alternating subprocesses, and each cell is the fastest of the rounds'
medians, so load on a shared machine hits both columns alike.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genkernels.bench import overhead

CASES = overhead.cases()
_ROOT = Path(__file__).resolve().parent.parent
_TIME_TABLE = (
    "import importlib.util, json, sys\n"
    "spec = importlib.util.spec_from_file_location('overhead_cases', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
    "import genkernels; assert genkernels.__file__.startswith(sys.argv[2]), genkernels.__file__\n"
    "print(json.dumps(module.time_cases()))\n"
)


@pytest.mark.parametrize("case", list(CASES))
def test_overhead(benchmark, case):
    fn = CASES[case]
    out = fn()
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape in ((1, 16), (1,), ())
    benchmark(fn)


def _time_tree(root: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    script = Path(overhead.__file__).resolve()
    out = subprocess.run([sys.executable, "-c", _TIME_TABLE, str(script), str(root)], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="older checkout to time beside this one")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    trees = {"after": _ROOT} if args.before is None else {"before": args.before.resolve(), "after": _ROOT}
    best: dict[str, dict[str, float]] = {name: {} for name in trees}
    for _ in range(args.rounds):
        for name, root in trees.items():
            for case, us in _time_tree(root).items():
                best[name][case] = min(us, best[name].get(case, float("inf")))
    columns = list(trees)
    width = max(map(len, best["after"]))
    print(f"{'case (16-element float32 CPU tensor, us/call)':{width}s}  " + "  ".join(f"{c:>7s}" for c in columns))
    for case in best["after"]:
        print(f"{case:{width}s}  " + "  ".join(f"{best[c].get(case, float('nan')):7.2f}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
