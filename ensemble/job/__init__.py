"""The main job: `driver.run` reads as prepare -> train members -> train baseline -> evaluate ->
report; `rundir` opens (or reopens) the run directory, `evaluation` scores frozen encoders,
`progress` prints what happens as it happens."""
