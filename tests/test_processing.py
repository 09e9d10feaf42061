"""Named pre/post-processing ops."""

from __future__ import annotations

import numpy as np
import pytest

from crossinfer.processing.ops import Outputs, build_op
from crossinfer.spec.nodes import Op


def pre(name: str, x: list[float], **params: object) -> np.ndarray:
    op = build_op(Op(name, params), "pre")
    assert op.element is not None
    return op.element(np.asarray(x, dtype=np.float32))


def post(name: str, batch: list[list[float]], **params: object) -> Outputs:
    return build_op(Op(name, params), "post").batch(Outputs(np.asarray(batch, dtype=np.float32)))


def test_cast_reshape_flatten() -> None:
    assert pre("cast", [1.5], dtype="float64").dtype == np.float64
    assert pre("reshape", [1, 2, 3, 4], shape=[2, 2]).shape == (2, 2)
    assert post("reshape", [[1, 2, 3, 4]], shape=[2, -1]).inference.shape == (1, 2, 2)
    assert post("flatten", [[1, 2]]).inference.shape == (1, 2)


def test_normalize_and_scale() -> None:
    np.testing.assert_allclose(pre("normalize", [2, 4], mean=2, std=2), [0, 1])
    np.testing.assert_allclose(pre("normalize", [2, 4], mean=[0, 4], std=[2, 1]), [1, 0])
    np.testing.assert_allclose(pre("scale", [16, 8], factor=0.0625), [1, 0.5])


def test_pad_truncate_makes_ragged_inputs_one_length() -> None:
    np.testing.assert_allclose(pre("pad_truncate", [1, 2], length=4, value=-1), [1, 2, -1, -1])
    np.testing.assert_allclose(pre("pad_truncate", [1, 2, 3, 4, 5], length=3), [1, 2, 3])


def test_softmax_sigmoid() -> None:
    out = post("softmax", [[0, 0], [1000, 0]]).inference
    np.testing.assert_allclose(out, [[0.5, 0.5], [1, 0]])
    np.testing.assert_allclose(post("sigmoid", [[0]]).inference, [[0.5]])


def test_argmax_sets_label_and_score() -> None:
    out = post("argmax", [[0.1, 0.7, 0.2], [0.9, 0.05, 0.05]])
    assert out.label.tolist() == [1, 0]
    np.testing.assert_allclose(out.score, [0.7, 0.9], rtol=1e-6)


def test_top_k_sets_labels_and_scores_in_descending_order() -> None:
    out = post("top_k", [[0.1, 0.7, 0.2]], k=2)
    assert out.labels.tolist() == [[1, 2]]
    np.testing.assert_allclose(out.scores, [[0.7, 0.2]], rtol=1e-6)


def test_threshold_compares_one_output() -> None:
    out = post("threshold", [[0.2, 0.8], [0.6, 0.4]], threshold=0.5, index=1)
    assert out.label.tolist() == [1, 0]


@pytest.mark.parametrize(("name", "params", "fragment"), [
    ("normalize", {"std": 0}, "must not be zero"),
    ("pad_truncate", {}, "'length' is required"),
    ("reshape", {"shape": "2x2"}, "list of integers"),
    ("softmax", {"axis": 1}, "unknown parameter 'axis'"),
    ("cast", {"dtype": "bogus"}, "numpy dtype"),
])
def test_bad_params_raise_a_sentence_naming_the_parameter(name: str, params: dict,
                                                          fragment: str) -> None:
    with pytest.raises((ValueError, TypeError), match=fragment):
        build_op(Op(name, params), "post")


def test_user_functions_apply_per_element_in_python_pipelines() -> None:
    op = build_op(lambda x: x * 2, "post")
    out = op.batch(Outputs(np.asarray([[1.0], [2.0]])))
    np.testing.assert_allclose(out.inference, [[2.0], [4.0]])
