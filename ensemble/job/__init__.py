"""The main job: `driver.run` reads as prepare -> train members -> train baseline -> evaluate ->
report; the run directory is opened and its checkpoints scored by `ensemble.runs`, and what happens
is printed as it happens by `console` and `display`."""
