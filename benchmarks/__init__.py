"""Standalone measurement scripts run from a checkout (`python benchmarks/x.py` or `python -m benchmarks.x`):
the ones that chose the defaults or measure one component (combiner_fit.py, eager_sweep.py, mirror_push.py,
packed_members.py, serve_load.py, device_check.py). Each file's header names the hardware and the figures it
gave. Not installed (it would shadow a user's own `benchmarks` package); `ensemble bench` lives in
ensemble/bench/. Scripts here may import ensemble, workers and classifier, never the other way round."""
