"""The run's observers: what the steps (`ensemble.job`) publish their typed events to. `progress`
(the views a user watches), `logs` (progress.csv, TensorBoard), `metrics` (Ray's Prometheus gauges)
and `tracking` (MLflow or a tracker object). None of them decides anything about the run."""
