"""Work on finished runs, without training (a run is read back by `ensemble.runs.saved_run`): another
stop rule or combiner over its checkpoints (`select`), accuracy against wall-clock per epoch (`curves`),
when each saved epoch was ready (`timeline`), and several seeds summarised (`repeats`)."""
