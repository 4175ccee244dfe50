"""First (decode) and second (cache) load time of a data set.

    python benchmarks/bench_data_cache.py                       # CIFAR-10 JPEG export
    python benchmarks/bench_data_cache.py --name mnist --data-dir ../shared/data/mnist

The cache goes to a fresh temporary folder, so the first load always decodes. The target
for CIFAR-10 from the image folder is a second load under 2 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="cifar10")
    parser.add_argument("--data-dir", default=str(ROOT / ".." / "shared" / "data" / "cifar10-jpg"))
    parser.add_argument(
        "--repeats", type=int, default=3, help="cached loads to time after the first"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="leanaug-bench-") as cache:
        os.environ["LEANAUG_CACHE"] = cache
        import numpy as np

        from leanaug.data import load_dataset

        start = time.perf_counter()
        first = load_dataset(args.name, data_dir=args.data_dir)
        t_first = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            again = load_dataset(args.name, data_dir=args.data_dir)
            times.append(time.perf_counter() - start)
        same = all(
            np.array_equal(getattr(first, k), getattr(again, k))
            for k in ("train_images", "train_labels", "test_images", "test_labels")
        )
        size_mb = sum(f.stat().st_size for f in Path(cache).rglob("*.npy")) / 1e6

    print(f"data set      : {args.name} from {args.data_dir} ({first.source})")
    print(f"arrays        : train {first.train_images.shape}, test {first.test_images.shape}")
    print(
        f"machine       : {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print(f"first load    : {t_first:.2f} s (decode + write cache, {size_mb:.0f} MB of .npy)")
    print(
        f"second load   : {times[0]:.2f} s (from cache); repeats: {', '.join(f'{t:.2f}' for t in times)} s"
    )
    print(f"cache == fresh: {same}")


if __name__ == "__main__":
    main()
