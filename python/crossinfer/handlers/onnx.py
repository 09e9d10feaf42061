"""ONNX models in ONNX Runtime, from the verified bytes; providers chosen from the device.

ONNX files are data (a graph of standard ops), so they need no opt-in; tensors
kept in external data files are refused (see :func:`check_no_external_data`).
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any

import numpy as np

from crossinfer.handlers.adapter import FrameworkAdapter, ModelLoadError, as_batch_output

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def providers_for(device: str, available: list[str]) -> list[str]:
    """ONNX Runtime providers for a device setting; 'gpu' without CUDA is an error."""
    if device == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if device == "auto":
        return [_CPU]
    raise ModelLoadError(f"device 'gpu' was requested but onnxruntime offers no {_CUDA} here "
                         f"(available: {', '.join(available)}); install onnxruntime-gpu on a "
                         "machine with an NVIDIA GPU, or use device 'auto'")


def session_options(ort: Any) -> Any:
    """ONNX Runtime session options for a pipeline worker.

    * External data (refused before, :func:`check_no_external_data`) would be
      looked up in an empty directory of its own, never the worker's working
      directory (a second line of defence).
    * Intra-op threads do not spin-wait for the next run: in a pipeline the
      runner's own thread works between model calls (decoding, batching,
      building rows), and spinning threads would take the cores it needs.
    * ``OMP_NUM_THREADS``, when set to a positive number, sets the intra-op
      thread count, as it does for PyTorch (workers that run one SDK process
      per core usually set it to 1); otherwise ONNX Runtime's default.
    """
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     _empty_directory())
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0:
        options.intra_op_num_threads = int(threads)
    return options


@functools.cache
def _empty_directory() -> str:
    """A directory of this process that stays empty (0o500: no one writes to it)."""
    path = tempfile.mkdtemp(prefix="crossinfer-no-external-data-")
    os.chmod(path, 0o500)
    return path


def check_no_external_data(data: bytes, name: str) -> None:
    """Refuse an ONNX model that refers to external data anywhere: such a tensor
    names a file that ONNX Runtime would open from wherever it points, outside
    the verified bytes and the model roots. Every tensor is walked - graph
    initializers and sparse initializers, node attributes (tensors, sparse
    tensors, subgraphs of If/Loop/Scan), functions and training graphs -
    since ONNX's own helper skips sparse tensors."""
    import onnx

    try:
        proto = onnx.load_model_from_string(data)  # never opens external data itself
    except Exception as exc:  # protobuf's DecodeError and others
        raise ModelLoadError(f"model {name!r}: not an ONNX model: {type(exc).__name__}: "
                             f"{exc}") from exc
    where = external_tensor(proto)
    if where is not None:
        raise ModelLoadError(f"model {name!r}: the ONNX model keeps tensors in external data "
                             f"files ({where}), which are refused; save it as one file "
                             "(onnx.save_model(model, path, save_as_external_data=False))")


def external_tensor(model: Any) -> str | None:
    """Where ``model`` (a ModelProto) refers to external data first, or None."""
    from onnx import AttributeProto, TensorProto

    graphs = [("graph", model.graph)]
    graphs += [(f"function {f.name!r}", f) for f in model.functions]
    graphs += [(f"training graph {i}", g) for i, t in enumerate(model.training_info)
               for g in (t.initialization, t.algorithm)]
    tensors: list[tuple[str, Any]] = []
    while graphs or tensors:
        while tensors:
            where, t = tensors.pop()
            if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
                return where
        if not graphs:
            break
        at, g = graphs.pop()
        tensors += [(f"{at}: initializer {t.name!r}", t) for t in getattr(g, "initializer", ())]
        for s in getattr(g, "sparse_initializer", ()):
            tensors += [(f"{at}: sparse initializer {s.values.name!r}", s.values),
                        (f"{at}: sparse initializer {s.values.name!r}", s.indices)]
        for node in g.node:
            for a in node.attribute:
                here = f"{at}: node {node.name or node.op_type!r} attribute {a.name!r}"
                if a.type == AttributeProto.TENSOR or a.HasField("t"):
                    tensors.append((here, a.t))
                tensors += [(here, t) for t in a.tensors]
                for s in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(
                        a.sparse_tensors):
                    tensors += [(here, s.values), (here, s.indices)]
                if a.HasField("g"):
                    graphs.append((here, a.g))
                graphs += [(here, sub) for sub in a.graphs]
    return None


class OnnxAdapter(FrameworkAdapter):
    framework = "onnx"

    def _load(self, data: bytes | None) -> Any:
        import onnxruntime as ort

        assert data is not None
        check_no_external_data(data, self.node.name)
        providers = providers_for(self.node.device, ort.get_available_providers())
        session = ort.InferenceSession(data, sess_options=session_options(ort),
                                       providers=providers)
        # The input and output names are looked up once, not per batch.
        outputs = [(o.name, o.shape) for o in session.get_outputs()]
        return _OnnxModel(session, session.get_inputs()[0].name, self._output_name(outputs))

    def _output_name(self, outputs: list[tuple[str, Any]]) -> str:
        """The output the spec selects (its only one by default), or ModelLoadError."""
        names = [name for name, _ in outputs]
        wanted = self.node.output
        if wanted is None and len(names) == 1:
            return names[0]
        if isinstance(wanted, int) and wanted < len(names):
            return names[wanted]
        if isinstance(wanted, str) and wanted in names:
            return wanted
        listing = ", ".join(f"{name!r}: shape {shape}" for name, shape in outputs)
        if wanted is None:
            raise ModelLoadError(f"model {self.node.name!r} has {len(names)} outputs "
                                 f"({listing}); set the model node's output to the one to use")
        raise ModelLoadError(f"model {self.node.name!r} has no output {wanted!r}; its outputs "
                             f"(by index 0..{len(names) - 1}): {listing}")

    def predict(self, model: Any, batch: np.ndarray, inference_args: dict[str, Any]
                ) -> np.ndarray:
        # inference_args are refused for ONNX by spec validation.
        (out,) = model.session.run([model.output_name], {model.input_name: batch})
        return as_batch_output(out, len(batch), self.node.name)


class _OnnxModel:
    def __init__(self, session: Any, input_name: str, output_name: str) -> None:
        self.session = session
        self.input_name = input_name
        self.output_name = output_name
