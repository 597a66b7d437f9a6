"""The main job: `driver.run` reads as prepare -> train members -> train baseline -> evaluate ->
report; `progress` prints what happens as it happens, `logs` and `metrics` record it, `failures`
says how a run that ended early can go on, and `supervisor` watches the driver from outside. The
run directory is opened and its checkpoints scored by `ensemble.runs`, one floor down."""
