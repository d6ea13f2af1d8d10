"""How fast the local test bed starts and how much memory it holds.

    .venv/bin/python bench/testbed_start.py [--runs 5]

Prints, per run, the wall time from the call to /readyz (etcd + kube-apiserver), the time
until the controllers have created the ``default`` ServiceAccount of a new namespace (the
moment Pods can be created), and the resident memory of each component.
"""

from __future__ import annotations

import argparse
import statistics
import time

from testbed.launcher import TestBed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ready, usable, rss_total = [], [], []
    for run in range(args.runs):
        t0 = time.monotonic()
        bed = TestBed.start()
        try:
            t_ready = time.monotonic() - t0
            bed.create_namespace(f"bench-{run}")
            t_usable = time.monotonic() - t0
            time.sleep(2.0)  # let the controllers settle before reading memory
            rss = bed.rss_bytes()
        finally:
            bed.stop()
        ready.append(t_ready)
        usable.append(t_usable)
        rss_total.append(sum(rss.values()))
        parts = ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss.items())
        print(
            f"run {run}: /readyz {t_ready:.2f}s, first namespace usable {t_usable:.2f}s; RSS {parts}"
        )
    print(
        f"median of {args.runs}: /readyz {statistics.median(ready):.2f}s, "
        f"usable {statistics.median(usable):.2f}s, "
        f"total RSS {statistics.median(rss_total) / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
