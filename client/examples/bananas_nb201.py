"""Run a BANANAS loop against a colecache server, on NAS-Bench-201 as a lookup-table 'trainer'.

    pip install ./client
    python client/examples/bananas_nb201.py --url http://localhost:8000 --dataset cifar100 --budget 60 [--whole-space]

The NB201 table is looked for in --data, else $COLECACHE_NB201_DATA, else ../shared/data/nb201 beside
a source checkout, else ~/.local/share/colecache/nb201 (never relative to the current directory).
Without it a synthetic score stands in for training: the run then says so on stderr and in its
result line, since its numbers are not NAS-Bench-201 accuracies. `--synthetic` asks for it on purpose.
"""

from __future__ import annotations

import argparse
import sys

from colecache_client import Bananas, Client
from colecache_client.benchmarks import NB201Oracle, find_nb201_dir, nb201_not_found
from colecache_client.spaces import get_space

SYNTHETIC_WARNING = "WARNING: SYNTHETIC OBJECTIVE, NOT NAS-BENCH-201"


def synthetic(arch: str) -> float:
    """A stand-in objective: 3x3 convolutions help, dead edges hurt."""
    ops = get_space("nb201").parse(arch).ops
    return 60.0 + 3 * ops.count("nor_conv_3x3") + ops.count("nor_conv_1x1") - 4 * ops.count("none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--dataset", default="cifar100", choices=["cifar10", "cifar100", "imagenet16-120"])
    parser.add_argument("--data", default=None, help="folder with nats_bench.csv (must hold it when given)")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic objective even if the table exists")
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--whole-space",
        action="store_true",
        help="score every NB201 class at each step instead of mutations of the best (the best measured search; "
        "the default study reads op graphs and needs no precompute; `colecache proxies --space nb201` gives it "
        "the zero-cost proxies)",
    )
    args = parser.parse_args()

    if args.synthetic:
        evaluate, objective = synthetic, "synthetic (--synthetic)"
    elif find_nb201_dir(args.data):
        evaluate, objective = NB201Oracle(args.dataset, args.data), f"NAS-Bench-201 {args.dataset} test accuracy"
    elif args.data:  # asked for a table that is not there: an error, not a silent stand-in
        parser.error(nb201_not_found(args.data))
    else:
        evaluate, objective = synthetic, f"synthetic stand-in ({nb201_not_found()})"
        print(
            f"{SYNTHETIC_WARNING}: the NAS-Bench-201 table was not found, so a made-up score stands in for "
            f"training and every number below is meaningless as an accuracy.\n  {nb201_not_found()}",
            file=sys.stderr,
            flush=True,
        )
    with Client(args.url, api_key=args.api_key) as client:
        client.wait_ready()
        name = "synthetic_score" if evaluate is synthetic else f"{args.dataset}_test_acc"
        study = client.create_study(f"example-{args.dataset}-seed{args.seed}", objective=name)
        search = Bananas(study, seed=args.seed, whole_space=args.whole_space)

        def report(arch: str, value: float) -> None:
            print(f"{len(search.observed):4d}  {value:7.3f}  best {search.best()[1]:7.3f}  {arch}", flush=True)

        result = search.run(evaluate, budget=args.budget, batch_size=args.batch_size, on_result=report)
    optimum = getattr(evaluate, "optimum", None)
    gap = f" ({100 * result.best_value / optimum:.2f}% of the optimum {optimum:.2f})" if optimum else ""
    flag = f"  [{SYNTHETIC_WARNING}]" if evaluate is synthetic else ""
    print(f"best after {len(result.history)} evaluations: {result.best_value:.3f}{gap}{flag}\n{result.best_arch}")
    print(f"objective: {objective}")
    if evaluate is synthetic:
        print(SYNTHETIC_WARNING, file=sys.stderr, flush=True)  # again at the end, where a reader looks


if __name__ == "__main__":
    main()
