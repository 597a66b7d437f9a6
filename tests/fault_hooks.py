"""Faults injected into Ray's worker processes through `worker_process_setup_hook` (a real Ray API),
for the failure-path tests: the code under test runs unchanged."""

import errno


def full_disk_at_the_second_epoch() -> None:
    """Every checkpoint file write after the first six (epoch 0's and epoch 1's three files) fails as a
    full disk does, naming the file."""
    import workers.checkpoints as checkpoints
    real, written = checkpoints.write_synced, []

    def write_synced(path, data):
        if len(written) >= 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        real(path, data)
    checkpoints.write_synced = write_synced
