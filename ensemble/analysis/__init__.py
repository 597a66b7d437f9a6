"""Work on finished runs, without training: a run read back (`saved_run`), another stop rule or
combiner over its checkpoints (`select`), accuracy against wall-clock per epoch (`curves`), when
each saved epoch was ready (`timeline`), and several seeds summarised (`repeats`)."""
