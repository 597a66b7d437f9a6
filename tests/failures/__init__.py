"""Failures, by theme: how a run that ends early is described (`test_messages`, pure), the failures
a run really meets (`test_real_failures`: SIGTERM, the raylet killed, a full disk, user code raising),
and what the run does about them (`test_recovery`: restarts, lost and diverging members, resume)."""
