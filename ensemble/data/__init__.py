"""The data: where images come from (`sources`), how they are split and scaled (`splits`,
`normalizer`). Loaded once on the driver; members read the tensors zero-copy from Ray's object store."""

from ensemble.data.normalizer import Normalizer
from ensemble.data.splits import Splits, load_splits

__all__ = ["Normalizer", "Splits", "load_splits"]
