#!/usr/bin/env bash
# The paper's experiment design as one sweep, on the embedded 8 x 8 digits (no download): small and
# large training data x 1 against 5 parallel members, 3 seeds per cell, each cell's ensemble against
# its monolithic baseline (width sqrt(members)), batch 100, Adam, eager plateau rule. Every cell x seed
# is an ordinary run directory; the sweep's table, plot and verdicts go to runs/paper-grid/.
#
#   bash examples/paper_grid.sh                  # 2 x 2 cells x 3 seeds = 12 runs, under 15 min on 2 CPUs
#   bash examples/paper_grid.sh --tiny           # 1 x 2 cells x 1 seed, 1 epoch: a smoke run (the test's)
#   bash examples/paper_grid.sh --dry-run        # the cells, the runs and an estimate of the time
#   bash examples/paper_grid.sh --parallel-cells 2   # any other `ensemble sweep` options
#
# Stopped (Ctrl-C, a pre-empted job)? `ensemble sweep --resume runs/paper-grid` trains only what is left.
# Under `ray job submit ... -- bash examples/paper_grid.sh` it runs on that cluster (RAY_ADDRESS).
set -euo pipefail

sizes=300,1200 members=1,5 repeats=3
settings=(--set data.name=digits --set data.val_size=200 --set data.test_size=300 --set train.batch_size=100)
args=("$@")
if [[ "${1:-}" == "--tiny" ]]; then
    sizes=100 members=1,2 repeats=1
    settings+=(--set train.epochs=1 --set baseline.max_epochs=1 --set "model.channels=[4, 8]")
    args=("${@:2}")
fi
[[ " ${args[*]} " == *" --output "* ]] || args+=(--output "$PWD/runs")
[[ " ${args[*]} " == *" --name "* ]] || args+=(--name paper-grid)

python -m ensemble sweep --grid "data.train_size=$sizes" --grid "members=$members" --repeats "$repeats" \
    "${settings[@]}" "${args[@]}"
