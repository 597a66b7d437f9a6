"""Load on `ensemble serve` for any finished run: `ensemble bench --serve`'s section, run alone.

Usage:
    ensemble run --name serve-bench --set baseline.enabled=false      # any finished run will do
    python benchmarks/serve_load.py runs/serve-bench [--workloads 2000x64,1000x1] [--clients 8] [--batch-sizes 16,1]

The measurement lives in `ensemble/bench/serving.py` (its docstring says what is sent and checked);
`ensemble bench --serve [RUN_DIR]` prints the same table with the rest and writes it to bench.json.
Figures: docs/performance.md (Serving throughput).
"""

import argparse
import sys
from pathlib import Path

from ensemble.bench.machine import machine_header
from ensemble.bench.serving import measure_serving, parse_workloads, serve_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--workloads", default="2000x64,1000x1", type=parse_workloads,
                        help="REQUESTSxMAX_IMAGES, comma-separated: each request carries 1..MAX_IMAGES images")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch-sizes", default="16,1", help="--max-batch-size values to compare")
    parser.add_argument("--port", type=int, default=None,
                        help="default: a free port for each server (a stopped one's stays held for up to a minute)")
    args = parser.parse_args(argv)
    result = measure_serving(args.run_dir, args.workloads, args.clients,
                             [int(b) for b in args.batch_sizes.split(",")], args.port)
    print(f"Machine: {machine_header()}")
    print(serve_table(result))
    return 1 if any(row["errors"] for row in result["workloads"]) else 0


if __name__ == "__main__":
    sys.exit(main())
