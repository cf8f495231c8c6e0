"""FAISS similarity search: recall@10 of approximate indexes against exact search, and queries/s.

Data: ``--n`` clustered vectors of dimension ``--dim`` (embeddings form clusters; uniform noise
would be the worst case for approximate indexes); ``--spread`` is the SD of a vector around its
cluster centre (centres are N(0, 1) per dimension, so 0.6 gives tight, well-separated clusters and
1.5 broad, overlapping ones). Queries (``--queries-from``): ``indexed`` = indexed vectors moved by
0.05 (near-duplicates: the easy case), ``new`` = fresh draws from the same clusters, not in the
index (what a query by a new crop is). Run:
    .venv/bin/python benchmarks/search.py --n 1000000 --dim 128
    .venv/bin/python benchmarks/search.py --n 1000000 --dim 128 --spread 1.5 --queries-from new --name search_hard
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

from cellkit.tl import build_similarity_index, recall_at_k  # noqa: E402


def clustered(n, dim, seed=0, n_clusters=1000, spread=0.6, centres_seed=0):
    centres = np.random.default_rng(centres_seed).normal(size=(n_clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(start + 100_000, n)
        x[start:stop] = centres[rng.integers(n_clusters, size=stop - start)]
        x[start:stop] += spread * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return x


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--spread", type=float, default=0.6)
    parser.add_argument("--queries-from", choices=("indexed", "new"), default="indexed")
    parser.add_argument("--name", default="search", help="results/<name>.json")
    args = parser.parse_args()
    x = clustered(args.n, args.dim, spread=args.spread)
    if args.queries_from == "indexed":
        queries = x[np.random.default_rng(1).choice(args.n, args.queries, replace=False)] + 0.05
    else:
        queries = clustered(args.queries, args.dim, seed=1, spread=args.spread)
    results = {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k, "spread": args.spread,
               "queries_from": args.queries_from, "indexes": {}}
    exact_rows = None
    for kind, options in [("exact", {}), ("ivf", {"nprobe": 16}), ("ivf", {"nprobe": 64}),
                          ("hnsw", {"m": 32, "ef_search": 64}), ("hnsw", {"m": 32, "ef_search": 128})]:
        start = time.perf_counter()
        index = build_similarity_index(x, kind=kind, **options)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        _, rows = index.search(queries, args.k)
        search_s = time.perf_counter() - start
        exact_rows = rows if kind == "exact" else exact_rows
        name = kind + "".join(f"_{k}{v}" for k, v in options.items())
        results["indexes"][name] = {"build_s": round(build_s, 2), "queries_per_s": round(args.queries / search_s, 1),
                                    f"recall_at_{args.k}": recall_at_k(rows, exact_rows), "params": index.params}
        print(name, results["indexes"][name], flush=True)
        del index
    save(args.name, results)


if __name__ == "__main__":
    main()
