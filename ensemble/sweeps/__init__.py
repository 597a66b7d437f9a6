"""`ensemble sweep`: a grid of settings x seeds, each an ordinary run (see `runner`)."""
