"""Framework handlers: devices, TensorRT, checksums, memory settings, metrics."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
import torch

import crossinfer as ci
from crossinfer.demo import sha256_of
from crossinfer.handlers import ModelLoadError, adapter_for, model_handler
from crossinfer.handlers.onnx import providers_for
from support import metric, run

SCALE = ci.Op("scale", {"factor": 1 / 16})
#: Code-capable formats run only where the policy opts in to them.
CODE_OK = ci.LoadPolicy(code_formats=("pickle", "torchscript", "engine"))


def rows(x, n=20):
    return [beam.Row(id=i, key=f"u{i}", features=x[i].tolist()) for i in range(n)]


def test_tensorrt_refuses_at_construction_where_tensorrt_or_a_gpu_is_missing(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    node = ci.ModelNode(name="trt", framework="tensorrt", uri=str(engine), device="gpu")
    with pytest.raises(ModelLoadError, match="framework 'tensorrt' needs"):
        ci.Model(node, policy=CODE_OK)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_gpu_device_without_cuda_fails_its_elements_with_a_clear_message(models, digits_data):
    node = ci.ModelNode(name="gpu_mlp", framework="pytorch", uri=models.path("digits_mlp.ts"),
                        device="gpu", preprocess=(SCALE,))
    results, failures, _ = run(rows(digits_data[0]), ci.Model(node, policy=CODE_OK))
    assert results == [] and len(failures) == 20
    assert all("device 'gpu' was requested but CUDA is not available" in f.error
               and f.error.startswith("model 'gpu_mlp' could not be loaded from ")
               for f in failures)


def test_auto_device_falls_back_to_cpu_without_cuda(models, digits_data):
    node = ci.ModelNode(name="auto_mlp", framework="pytorch", uri=models.path("digits_mlp.ts"),
                        device="auto", preprocess=(SCALE,))
    results, failures, _ = run(rows(digits_data[0]), ci.Model(node, policy=CODE_OK))
    assert len(results) == 20 and failures == []


def test_pytorch_outputs_are_numpy_arrays_of_their_own_not_views_of_the_tensor():
    # A view would keep torch's buffer alive as long as the block holding the
    # output (PytorchAdapter.to_numpy says what that cost).
    adapter = adapter_for(ci.ModelNode(name="m", framework="pytorch", format="state_dict",
                                       uri="unused.pt", model_class="crossinfer.models:MLP"),
                          ci.LoadPolicy())
    tensor = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    out = adapter.batch_output(tensor, 4)
    assert out.dtype == np.float32 and out.shape == (4, 3)
    assert np.array_equal(out, tensor.numpy()) and not np.shares_memory(out, tensor.numpy())


def test_onnx_providers_follow_the_device_setting():
    assert providers_for("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"]
    assert providers_for("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers_for("gpu", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == (
        "CUDAExecutionProvider")
    with pytest.raises(ModelLoadError, match="no CUDAExecutionProvider"):
        providers_for("gpu", ["CPUExecutionProvider"])


def test_a_pinned_checksum_is_verified_before_unpickling(models, digits_data):
    good = ci.ModelNode(name="lr", framework="sklearn", uri=models.path("digits_lr.pkl"),
                        sha256=sha256_of(models.path("digits_lr.pkl")), preprocess=(SCALE,))
    results, _, _ = run(rows(digits_data[0]), ci.Model(good, policy=CODE_OK))
    assert len(results) == 20
    tampered = ci.ModelNode(name="lr", framework="sklearn", uri=models.path("digits_lr.pkl"),
                            sha256="0" * 64)
    results, failures, _ = run(rows(digits_data[0]), ci.Model(tampered, policy=CODE_OK))
    assert results == [] and len(failures) == 20
    assert all("refusing to load it" in f.error for f in failures)


def test_classes_outside_the_allow_list_are_refused_before_anything_is_imported(models):
    node = ci.ModelNode(name="evil", framework="custom", handler_class="os:system")
    with pytest.raises(ci.SpecError, match="not in the allow-list"):
        ci.Model(node)
    with pytest.raises(ModelLoadError, match="not in the allow-list"):
        adapter_for(node, ci.LoadPolicy())


def test_large_model_and_model_copies_pass_through_to_beam(models):
    base = dict(name="lr", framework="sklearn", uri=models.path("digits_lr.pkl"))
    large = model_handler(ci.ModelNode(**base, memory=ci.Memory(large_model=True)),
                          ci.LoadPolicy(), "lr")
    assert large.share_model_across_processes()
    copies = model_handler(ci.ModelNode(**base, memory=ci.Memory(model_copies=3)),
                           ci.LoadPolicy(), "lr")
    assert copies.share_model_across_processes() and copies.model_copies() == 3
    plain = model_handler(ci.ModelNode(**base), ci.LoadPolicy(), "lr")
    assert not plain.share_model_across_processes()


def test_batching_settings_reach_beams_batch_elements(models):
    node = ci.ModelNode(name="lr", framework="sklearn", uri=models.path("digits_lr.pkl"),
                        batching=ci.Batching(min_batch_size=4, max_batch_size=16,
                                             max_wait_secs=2))
    kwargs = model_handler(node, ci.LoadPolicy(), "lr").batch_elements_kwargs()
    assert kwargs == {"min_batch_size": 4, "max_batch_size": 16, "max_batch_duration_secs": 2}


def test_metrics_are_reported_per_model_and_arm(models, digits_data):
    spec = json.loads((models.root / "ab.json").read_text())
    results, _, result = run(rows(digits_data[0], 200), ci.ABTest(spec))
    per_arm = {arm: sum(1 for r in results if r.path.split("/")[1] == arm)
               for arm in ("control", "treatment")}
    for arm, model in (("control", "digits_lr"), ("treatment", "digits_mlp")):
        ns = f"crossinfer/digits_ab/{arm}/{model}"
        assert metric(result, ns, "num_inferences") == per_arm[arm]
        assert metric(result, f"crossinfer/digits_ab/{arm}", "routed") == per_arm[arm]
        sizes = metric(result, ns, "inference_request_batch_size", "distributions")
        assert sizes and sizes[0].count >= 1
        loads = metric(result, ns, "load_model_latency_milli_secs", "distributions")
        assert loads and loads[0].count == 1


def test_a_custom_class_that_is_not_a_model_handler_fails_at_construction():
    node = ci.ModelNode(name="wrong", framework="custom", handler_class="crossinfer.models:MLP")
    with pytest.raises(ci.SpecError, match=r"node\.handler_class: 'crossinfer\.models:MLP' is "
                                           r"not a subclass of apache_beam"):
        ci.Model(node)


def test_a_node_kind_that_is_not_a_string_is_a_field_error():
    with pytest.raises(ci.SpecError, match=r"node\.kind: expected one of"):
        ci.load_spec({"version": 1, "node": {"kind": ["model"], "name": "m"}})
