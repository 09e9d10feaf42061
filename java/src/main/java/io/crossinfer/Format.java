package io.crossinfer;

/** How a model file is stored; the spec's {@code format} field. */
public enum Format {
  /** A TorchScript file ({@code torch.jit.save}); PyTorch's default. */
  TORCHSCRIPT("torchscript"),
  /** A PyTorch state dict, loaded into an allow-listed {@code model_class}. */
  STATE_DICT("state_dict"),
  /** An ONNX model file. */
  ONNX("onnx"),
  /** A pickled scikit-learn estimator; scikit-learn's default. */
  PICKLE("pickle"),
  /** A joblib-dumped scikit-learn estimator. */
  JOBLIB("joblib"),
  /** A serialized TensorRT engine. */
  ENGINE("engine"),
  /** Whatever a custom handler reads. */
  CUSTOM("custom");

  private final String specName;

  Format(String specName) {
    this.specName = specName;
  }

  /** The name used in the spec JSON, e.g. {@code "state_dict"}. */
  public String specName() {
    return specName;
  }
}
