"""Reading what a run wrote for TensorBoard, with TensorBoard's own reader (tests that use it need the
`tensorboard` package)."""


def scalars(logdir):
    """Every TensorBoard run under `logdir` and its scalars, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    board = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    board.Reload()
    return {run: {tag: [(s.step, s.value) for s in board.Scalars(run, tag)] for tag in tags["scalars"]}
            for run, tags in board.Runs().items()}
