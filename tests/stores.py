"""A pyarrow filesystem wrapper for storage tests: what a mirror writes, and in which order."""


class RecordingFilesystem:
    """Wraps a pyarrow filesystem and records the paths of the files written, in order."""

    def __init__(self, inner):
        self.inner, self.written = inner, []

    def create_dir(self, path, recursive=True):
        self.inner.create_dir(path, recursive=recursive)

    def open_output_stream(self, path):
        self.written.append(path)
        return self.inner.open_output_stream(path)
