"""Model, A/B, sequence and keyed pipelines on the digits data, checked against
calling the models directly."""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter

import apache_beam as beam
import numpy as np
import onnxruntime as ort
import pytest
import torch

import crossinfer as ci
from crossinfer.demo import DemoModels
from crossinfer.engine.block import Block
from crossinfer.models import MLP
from crossinfer.patterns.ab_test import (
    _Split,
    arm_tag,
    element_points,
    hash_bucket,
    pick_arm,
    split_key,
)
from support import DIGITS_TOL, assert_same_label, run

SCALE = ci.Op("scale", {"factor": 1 / 16})
ARGMAX = (ci.Op("softmax"), ci.Op("argmax"))


def digit_rows(x: np.ndarray, n: int | None = None, key=None) -> list[beam.Row]:
    n = len(x) if n is None else n
    return [beam.Row(id=i, key=key(i) if key else f"user-{i}", features=x[i].tolist())
            for i in range(n)]


def load_pickle(path: str):
    with open(path, "rb") as f:
        return pickle.load(f)


def direct_mlp(models: DemoModels, x: np.ndarray) -> np.ndarray:
    mlp = MLP([64, 64, 10])
    mlp.load_state_dict(torch.load(models.path("digits_mlp.pt")))
    with torch.no_grad():
        return torch.softmax(mlp(torch.from_numpy(x / 16.0)), dim=1).numpy()


def by_id(rows: list) -> dict[int, object]:
    return {r.id: r for r in rows}


# ------------------------------------------------------------ single model


#: The code-capable formats run only where the policy opts in to them.
CODE_OK = ci.LoadPolicy(code_formats=("pickle", "joblib", "torchscript"))


@pytest.mark.parametrize("variant", ["sklearn_skops", "sklearn_pickle", "sklearn_joblib",
                                     "torch_state_dict", "torchscript", "onnx"])
def test_single_model_matches_calling_the_model_directly(models, digits_data, variant) -> None:
    x, y = digits_data
    nodes = {
        "sklearn_skops": ci.ModelNode(name="m", framework="sklearn", method="predict_proba",
                                      format="skops", uri=models.path("digits_lr.skops"),
                                      preprocess=(SCALE,), postprocess=(ci.Op("argmax"),)),
        "sklearn_pickle": ci.ModelNode(name="m", framework="sklearn", method="predict_proba",
                                       uri=models.path("digits_lr.pkl"), preprocess=(SCALE,),
                                       postprocess=(ci.Op("argmax"),)),
        "sklearn_joblib": ci.ModelNode(name="m", framework="sklearn", format="joblib",
                                       method="predict_proba", preprocess=(SCALE,),
                                       uri=models.path("digits_lr.joblib"),
                                       postprocess=(ci.Op("argmax"),)),
        "torch_state_dict": ci.ModelNode(name="m", framework="pytorch", format="state_dict",
                                         uri=models.path("digits_mlp.pt"),
                                         model_class="crossinfer.models:MLP",
                                         model_params={"sizes": [64, 64, 10]},
                                         preprocess=(SCALE,), postprocess=ARGMAX),
        "torchscript": ci.ModelNode(name="m", framework="pytorch", device="auto",
                                    uri=models.path("digits_mlp.ts"), preprocess=(SCALE,),
                                    postprocess=ARGMAX),
        "onnx": ci.ModelNode(name="m", framework="onnx", uri=models.path("digits_mlp.onnx"),
                             preprocess=(SCALE,), postprocess=ARGMAX),
    }
    results, failures, _ = run(digit_rows(x, 300), ci.Model(nodes[variant], policy=CODE_OK))
    assert failures == []
    assert len(results) == 300
    xs = x[:300] / 16.0
    if variant.startswith("sklearn"):
        expected = load_pickle(models.path("digits_lr.pkl")).predict_proba(xs)
    elif variant == "onnx":
        session = ort.InferenceSession(models.path("digits_mlp.onnx"),
                                       providers=["CPUExecutionProvider"])
        logits = session.run(None, {"x": xs.astype(np.float32)})[0]
        expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    else:
        expected = direct_mlp(models, x[:300])
    for row in results:
        np.testing.assert_allclose(row.inference, expected[row.id], **DIGITS_TOL)
        assert_same_label(row.label, int(np.argmax(expected[row.id])), expected[row.id],
                          DIGITS_TOL["atol"])
        assert row.model == "m" and row.path == "m"
    accuracy = np.mean([row.label == y[row.id] for row in results])
    assert accuracy > 0.95


# ------------------------------------------------------------ A/B


def test_ab_hash_split_sends_each_key_to_one_arm_with_correct_predictions(models, digits_data):
    x, _ = digits_data
    spec = json.loads((models.root / "ab.json").read_text())
    results, failures, _ = run(digit_rows(x, 600), ci.ABTest(spec))
    assert failures == [] and len(results) == 600
    lr_probs = load_pickle(models.path("digits_lr.pkl")).predict_proba(x[:600] / 16.0)
    mlp_probs = direct_mlp(models, x[:600])
    arms = Counter()
    for row in results:
        arm = row.path.split("/")[1]
        arms[arm] += 1
        expected_arm = ["control", "treatment"][pick_arm(hash_bucket("digits-2026", row.key),
                                                         [0.9, 1.0])]
        assert arm == expected_arm
        expected = lr_probs[row.id] if arm == "control" else mlp_probs[row.id]
        np.testing.assert_allclose(row.inference, expected, **DIGITS_TOL)
    assert set(arms) == {"control", "treatment"}


def _cheap_ab(models: DemoModels, split: str, **extra: object) -> ci.ABTestNode:
    def lr(name: str) -> ci.ModelNode:
        return ci.ModelNode(name=name, framework="sklearn", format="skops",
                            uri=models.path("digits_lr.skops"),
                            preprocess=(SCALE,))
    return ci.ABTestNode(name="exp-7", split=split, arms=(
        ci.Arm("a", lr("lr_a"), 70), ci.Arm("b", lr("lr_b"), 20), ci.Arm("c", lr("lr_c"), 10)),
        **extra)


def test_hash_split_is_sticky_and_within_two_percent_on_10000_keys(models, digits_data):
    x, _ = digits_data
    rows = [beam.Row(id=i, key=f"customer-{i}", features=x[i % len(x)].tolist())
            for i in range(10_000)]
    first, failures, _ = run(rows, ci.ABTest(_cheap_ab(models, "hash")))
    assert failures == []
    arm_of = {r.key: r.path.split("/")[1] for r in first}
    shares = Counter(arm_of.values())
    for arm, weight in (("a", 0.7), ("b", 0.2), ("c", 0.1)):
        assert abs(shares[arm] / 10_000 - weight) <= 0.02, shares
    # Sticky: the same keys in another order and another pipeline land in the same arms.
    again, _, _ = run(list(reversed(rows[:2000])), ci.ABTest(_cheap_ab(models, "hash")))
    assert all(arm_of[r.key] == r.path.split("/")[1] for r in again)
    # A different experiment (salt) splits independently.
    other, _, _ = run(rows[:2000], ci.ABTest(_cheap_ab(models, "hash", salt="exp-8")))
    moved = sum(arm_of[r.key] != r.path.split("/")[1] for r in other)
    assert moved > 500


def test_random_split_follows_the_weights(models, digits_data):
    x, _ = digits_data
    results, _, _ = run(digit_rows(x), ci.ABTest(_cheap_ab(models, "random", seed=3)))
    shares = Counter(r.path.split("/")[1] for r in results)
    assert abs(shares["a"] / len(x) - 0.7) < 0.05
    assert abs(shares["c"] / len(x) - 0.1) < 0.05


def binomial_bound(n: int, p: float, sigmas: float = 5.0) -> float:
    """How far a count of successes in ``n`` independent draws of probability
    ``p`` may stray from ``n * p`` (``sigmas`` standard deviations: a false
    alarm about once in 1.7 million runs)."""
    return sigmas * math.sqrt(n * p * (1 - p))


def test_seeded_random_split_instances_do_not_replay_each_others_draws(models) -> None:
    """A 50/50 seeded split over many short-lived split instances (as new
    workers, bundles and streaming windows make them), each given other rows:
    the shares stay within a binomial bound. A generator seeded from the spec's
    seed alone in each instance replayed the same first draws, and the shares
    drifted far from the weights (43/57)."""
    node = ci.ABTestNode(name="ab", split="random", seed=0, arms=(
        ci.Arm("a", _cheap_ab(models, "random").arms[0].node, 1),
        ci.Arm("b", _cheap_ab(models, "random").arms[1].node, 1)))
    n, per_instance = 3000, 1
    arm_a = 0
    for i in range(n // per_instance):
        split = _Split(node, "ab")
        split.setup()  # a new instance, seeded as every other one
        rows = np.arange(i * per_instance, (i + 1) * per_instance, dtype=np.float32)
        block = Block([None] * per_instance, np.stack([rows, -rows], axis=1))
        for out in split.process(block):
            if out.tag == arm_tag(0):
                arm_a += len(out.value)
    assert abs(arm_a - n / 2) <= binomial_bound(n, 0.5), arm_a

    # Reproducible: the same seed, salt and rows give the same points; another seed others.
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    same = element_points(x, None, split_key(0, "ab"))
    assert (same == element_points(x.copy(), None, split_key(0, "ab"))).all()
    assert (same != element_points(x, None, split_key(1, "ab"))).mean() > 0.99
    assert ((0 <= same) & (same < 1)).all()
    # Rows alike in features but not in key split independently.
    alike = np.zeros((n, 4), np.float32)
    keyed = element_points(alike, [f"u{i}" for i in range(n)], split_key(0, "ab"))
    assert abs((keyed < 0.5).sum() - n / 2) <= binomial_bound(n, 0.5)


def test_random_split_share_is_within_a_binomial_bound(models, digits_data) -> None:
    x, _ = digits_data
    results, failures, _ = run(digit_rows(x), ci.ABTest(_cheap_ab(models, "random", seed=11)))
    assert failures == [] and len(results) == len(x)
    shares = Counter(r.path.split("/")[1] for r in results)
    for arm, p in (("a", 0.7), ("b", 0.2), ("c", 0.1)):
        assert abs(shares[arm] - len(x) * p) <= binomial_bound(len(x), p), shares


def test_mirror_sends_every_element_to_every_arm(models, digits_data):
    x, _ = digits_data
    rows = [*digit_rows(x, 200), beam.Row(id=-1, key="k", features=[])]
    results, failures, _ = run(rows, ci.ABTest(_cheap_ab(models, "mirror")))
    per_arm = Counter(r.path.split("/")[1] for r in results)
    assert per_arm == {"a": 200, "b": 200, "c": 200}
    assert [f.element.id for f in failures] == [-1]  # input failures are not mirrored


def test_an_ab_arm_can_be_a_sequence(models, digits_data):
    x, _ = digits_data
    spec = json.loads((models.root / "sequence.json").read_text())
    seq = ci.load_spec(spec).node
    lr = ci.ModelNode(name="lr", framework="sklearn", format="skops",
                      uri=models.path("digits_lr.skops"),
                      method="predict_proba", preprocess=(SCALE,), postprocess=ARGMAX[1:])
    node = ci.ABTestNode(name="shadow", split="mirror",
                         arms=(ci.Arm("current", lr), ci.Arm("candidate", seq)))
    results, failures, _ = run(digit_rows(x, 100), ci.ABTest(node))
    assert failures == []
    assert Counter(r.path for r in results) == {
        "shadow/current/lr": 100, "shadow/candidate/digits_seq/digits_pca_mlp": 100}


# ------------------------------------------------------------ sequence


def test_sequence_feeds_each_stage_the_post_processed_output_of_the_last(models, digits_data):
    x, y = digits_data
    spec = json.loads((models.root / "sequence.json").read_text())
    results, failures, _ = run(digit_rows(x, 400), ci.Sequence(spec))
    assert failures == [] and len(results) == 400
    pca = load_pickle(models.path("digits_pca.pkl"))
    mlp = MLP([16, 32, 10])
    mlp.load_state_dict(torch.load(models.path("digits_pca_mlp.pt")))
    with torch.no_grad():
        components = torch.from_numpy(pca.transform(x[:400] / 16.0).astype(np.float32))
        expected = torch.softmax(mlp(components), dim=1).numpy()
    for row in results:
        assert row.model == "digits_pca_mlp"
        np.testing.assert_allclose(row.inference, expected[row.id], **DIGITS_TOL)
    assert np.mean([r.label == y[r.id] for r in results]) > 0.95
