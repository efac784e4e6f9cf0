"""Run a BANANAS loop against a colecache server, on NAS-Bench-201 as a lookup-table 'trainer'.

    pip install ./client
    python client/examples/bananas_nb201.py --url http://localhost:8000 --dataset cifar100 --budget 60

Without the NB201 table (COLECACHE_NB201_DATA or --data), a synthetic score stands in for training.
"""

from __future__ import annotations

import argparse

from colecache_client import Bananas, Client
from colecache_client.benchmarks import NB201Oracle, find_nb201_dir
from colecache_client.spaces import get_space


def synthetic(arch: str) -> float:
    """A stand-in objective: 3x3 convolutions help, dead edges hurt."""
    ops = get_space("nb201").parse(arch).ops
    return 60.0 + 3 * ops.count("nor_conv_3x3") + ops.count("nor_conv_1x1") - 4 * ops.count("none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--dataset", default="cifar100", choices=["cifar10", "cifar100", "imagenet16-120"])
    parser.add_argument("--data", default=None, help="folder with nats_bench.csv")
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    evaluate = NB201Oracle(args.dataset, args.data) if find_nb201_dir(args.data) else synthetic
    with Client(args.url, api_key=args.api_key) as client:
        client.wait_ready()
        study = client.create_study(f"example-{args.dataset}-seed{args.seed}", objective=f"{args.dataset}_test_acc")
        search = Bananas(study, seed=args.seed)

        def report(arch: str, value: float) -> None:
            print(f"{len(search.observed):4d}  {value:7.3f}  best {search.best()[1]:7.3f}  {arch}", flush=True)

        result = search.run(evaluate, budget=args.budget, batch_size=args.batch_size, on_result=report)
    optimum = getattr(evaluate, "optimum", None)
    gap = f" ({100 * result.best_value / optimum:.2f}% of the optimum {optimum:.2f})" if optimum else ""
    print(f"best after {len(result.history)} evaluations: {result.best_value:.3f}{gap}\n{result.best_arch}")


if __name__ == "__main__":
    main()
