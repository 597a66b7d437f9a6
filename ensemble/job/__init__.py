"""The main job. `driver.run` orders the five steps, each a module with a `run` of its own:
`prepare` -> `train_members` -> `train_baseline` -> `evaluate` -> `write_report`; `run_dir` holds
the run directory locked and opened around them, and `watching` hands their events to the
observers (`ensemble.observers`). `failures` says how a run that ended early can go on,
`supervisor` watches the driver from outside, and `dry_run` prints a plan without Ray. The run
directory is opened and its checkpoints scored by `ensemble.runs`, one floor down."""
