"""`ensemble bench`: our stack measured against plain PyTorch loops and the baseline, side by side
(bench.py), its command-line parser (command.py, light: the CLI loads it for every command) and the
machine header every measurement prints (machine.py). The standalone measurement scripts that chose
defaults live in benchmarks/ at the repository root, which is not installed."""
