"""What `ensemble serve` makes of a request body, without Ray or a server: the pure functions."""

import io
import json

import numpy as np
import pytest

from ensemble.serving.requests import (
    RequestError,
    body_format,
    check_declared_length,
    checked_images,
    images_from_body,
    isolated_answers,
    labels_from_probabilities,
    model_card,
    prediction_body,
)

GRAY = (1, 8, 8)
RGB = (3, 4, 5)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def refused(call, *args) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call(*args)
    assert "\n" not in str(caught.value)  # one line for the client
    return caught.value


@pytest.mark.parametrize("header, kind", [("application/json", "json"), ("application/json; charset=utf-8", "json"),
                                          ("Application/JSON", "json"), ("application/octet-stream", "npy")])
def test_content_types_accepted(header, kind):
    assert body_format(header) == kind


@pytest.mark.parametrize("header", [None, "", "text/plain", "multipart/form-data; boundary=x", "application/xml"])
def test_other_content_types_are_400_naming_what_to_send(header):
    err = refused(body_format, header)
    assert err.status == 400 and "application/json" in str(err) and "application/octet-stream" in str(err)


def test_declared_length_over_the_limit_is_413_before_reading():
    check_declared_length("1000", 1000)
    check_declared_length(None, 1000)
    assert refused(check_declared_length, "1001", 1000).status == 413


def test_json_and_npy_bodies_give_the_same_float32_batch():
    images = np.arange(2 * 64, dtype=np.float64).reshape(2, 8, 8)
    from_json = images_from_body(json.dumps({"images": images.tolist()}).encode(), "json", GRAY)
    from_npy = images_from_body(npy(images[:, np.newaxis].astype(np.uint8)), "npy", GRAY)
    assert from_json.dtype == np.float32 and from_json.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(from_json, from_npy)


def test_fortran_order_npy_keeps_its_values():
    images = np.asfortranarray(np.random.default_rng(0).random((3, *RGB)))
    np.testing.assert_array_equal(images_from_body(npy(images), "npy", RGB), images.astype(np.float32))


@pytest.mark.parametrize("body, message", [
    (b'{"images": [1, 2', "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b"[1, 2]", '"images" key'),
    (b'{"pixels": []}', '"images" key'),
    (b'{"images": [[[1, 2], [3]]]}', "ragged"),
    (b'{"images": [[["a", "b"]]]}', "numbers only (found strings)"),
    (b'{"images": [[[1, null]]]}', "numbers only"),
    (b'{"images": [[[true, false]]]}', "numbers only (found booleans)"),
])
def test_bad_json_bodies_are_400(body, message):
    err = refused(images_from_body, body, "json", GRAY)
    assert err.status == 400 and message in str(err)


def test_bad_npy_bodies_are_400():
    assert "not a .npy array" in str(refused(images_from_body, b"garbage", "npy", GRAY))
    assert "not a .npy array" in str(refused(images_from_body, npy(np.zeros((1, 8, 8)))[:20], "npy", GRAY))
    objects = np.empty((1, 8, 8), dtype=object)
    assert "must hold numbers" in str(refused(images_from_body, npy(objects), "npy", GRAY))  # no unpickling
    assert "must hold numbers" in str(refused(images_from_body, npy(np.full((1, 8, 8), "x")), "npy", GRAY))
    truncated = npy(np.zeros((4, 8, 8), dtype=np.float32))[:-10]
    assert "body holds" in str(refused(images_from_body, truncated, "npy", GRAY))


def test_a_huge_npy_header_is_refused_without_allocating():
    header = npy(np.zeros((1, 8, 8), dtype=np.float64))
    huge = header.replace(b"(1, 8, 8)", b"(10000000000, 8, 8)")  # same header length class, tiny body
    assert "announces shape (10000000000, 8, 8)" in str(refused(images_from_body, huge, "npy", GRAY))


def test_both_accepted_layouts_and_int_pixels():
    assert checked_images(np.zeros((2, 8, 8), dtype=np.uint8), GRAY).shape == (2, 1, 8, 8)
    assert checked_images(np.zeros((2, 1, 8, 8)), GRAY).shape == (2, 1, 8, 8)
    assert checked_images(np.zeros((1, *RGB)), RGB).shape == (1, *RGB)


@pytest.mark.parametrize("shape, expected, message", [
    ((0,), GRAY, "empty batch"),
    ((0, 1, 8, 8), GRAY, "empty batch"),
    ((2, 7, 8), GRAY, "wrong image shape: expected N x 1 x 8 x 8 or N x 8 x 8, got 2 x 7 x 8"),
    ((2, 3, 8, 8), GRAY, "wrong channel count: the images have 3 channel(s), this model takes 1"),
    ((2, 1, 4, 5), RGB, "wrong channel count: the images have 1 channel(s), this model takes 3"),
    ((2, 4, 5), RGB, "wrong image shape: expected N x 3 x 4 x 5, got 2 x 4 x 5"),
    ((8, 8), GRAY, "wrong image shape"),
    ((), GRAY, "wrong image shape"),
    ((1, 1, 1, 8, 8), GRAY, "wrong image shape"),
])
def test_wrong_shapes_are_400_naming_the_shape(shape, expected, message):
    err = refused(checked_images, np.zeros(shape), expected)
    assert err.status == 400 and message in str(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])  # 1e39: finite in JSON, inf as float32
def test_non_finite_pixels_are_400_naming_the_image(bad):
    images = np.zeros((3, 8, 8))
    images[1, 2, 3] = bad
    err = refused(checked_images, images, GRAY)
    assert err.status == 400 and "1 pixel(s) are NaN or inf (the first in image 1)" in str(err)


def test_nan_written_by_a_json_encoder_is_caught():
    body = json.dumps({"images": [[[float("nan")] * 8] * 8]}).encode()  # Python writes the literal NaN
    assert "NaN or inf" in str(refused(images_from_body, body, "json", GRAY))


def test_labels_are_the_dataset_values_and_near_ties_are_flagged():
    classes = np.array(["cat", "dog", "owl"])
    probabilities = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5 + 1e-9]])
    labels, near_tie = labels_from_probabilities(probabilities, classes)
    assert labels.tolist() == ["dog", "cat", "owl"] and near_tie.tolist() == [False, True, False]


def test_prediction_body_is_plain_json():
    body = prediction_body(np.array([3, 1]), np.array([1, 3]), np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32))
    assert json.loads(json.dumps(body)) == {"labels": [3, 1], "classes": [1, 3],
                                            "probabilities": [[0.25, 0.75], [1.0, 0.0]]}


def test_model_card_names_data_members_accuracy_verdict_and_the_untrained_reference():
    from types import SimpleNamespace as Obj
    report = Obj(name="r1", verdict="Supports the claim: ...", config={"combiner": {"kind": "stack"}}, baseline=None,
                 dataset=Obj(source="digits", image_shape=[1, 8, 8], classes=["0", "1"], labels=[0, 1], test=150),
                 ensemble=Obj(members_used=[0, 2], test_accuracy=0.9, untrained_test_accuracy=0.85))
    card = model_card(report)
    assert card["members"] == 2 and card["test_accuracy"] == 0.9 and card["untrained_encoders_test_accuracy"] == 0.85
    assert card["verdict"].startswith("Supports") and card["dataset"]["image_shape"] == [1, 8, 8]
    assert card["baseline_test_accuracy"] is None and "POST /predict" in card["usage"] and card["run"] == "r1"
    json.dumps(card)


def fake_model(poison: float = 1e30):
    """predict(): raises, as the combiner does on inf features, when any pixel is at least `poison`;
    a pixel of exactly -1 gives NaN probabilities without raising."""
    calls = []

    def predict(images):
        calls.append(len(images))
        if (images >= poison).any():
            raise ValueError("features contain NaN or inf in 1 row(s)")
        probabilities = np.full((len(images), 2), 0.5)
        probabilities[(images == -1).reshape(len(images), -1).any(axis=1)] = np.nan
        return images.reshape(len(images), -1)[:, 0].astype(int), probabilities

    return predict, calls


def test_a_request_whose_features_overflow_gets_its_own_400_and_the_others_their_answers():
    predict, calls = fake_model()
    batches = [np.full((2, 1, 1, 1), float(i)) for i in range(4)]
    batches[2][1] = 3e38
    answers = isolated_answers(batches, predict)
    assert calls == [8, 2, 2, 2, 2]  # one pass over all, then each alone
    assert isinstance(answers[2], RequestError) and answers[2].status == 400 and "NaN or inf" in str(answers[2])
    for index in (0, 1, 3):
        labels, probabilities = answers[index]
        assert labels.tolist() == [index, index] and probabilities.shape == (2, 2)


def test_non_finite_probabilities_are_that_request_s_400_only():
    predict, _ = fake_model()
    batches = [np.zeros((1, 1, 1, 1)), np.full((3, 1, 1, 1), -1.0), np.ones((1, 1, 1, 1))]
    answers = isolated_answers(batches, predict)
    assert [type(answer).__name__ for answer in answers] == ["tuple", "RequestError", "tuple"]


def test_a_failure_that_is_not_the_input_s_stays_with_its_request_as_the_exception():
    def predict(images):
        if (images == 7).any():
            raise RuntimeError("out of memory")
        return np.zeros(len(images), dtype=int), np.full((len(images), 2), 0.5)

    answers = isolated_answers([np.zeros((1, 1)), np.full((1, 1), 7.0)], predict)
    assert isinstance(answers[0], tuple) and isinstance(answers[1], RuntimeError)


def test_a_batch_that_succeeds_is_computed_once_and_split_in_request_order():
    predict, calls = fake_model()
    batches = [np.full((size, 1, 1, 1), float(size)) for size in (1, 3, 2)]
    answers = isolated_answers(batches, predict)
    assert calls == [6] and [labels.tolist() for labels, _ in answers] == [[1], [3, 3, 3], [2, 2]]
