"""One home for measurement code: `ensemble bench` (bench.py) and the scripts that chose the
defaults or measure one component (combiner_fit.py, eager_sweep.py, mirror_push.py). Each file's header names
the hardware and the figures it gave. This package sits above `ensemble/`; it reaches the CLI
through the `eager_ensembles.commands` entry point (command.py), never the other way round."""
