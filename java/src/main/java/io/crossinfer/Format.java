package io.crossinfer;

/**
 * How a model file is stored; the spec's {@code format} field.
 *
 * <p>{@link #PICKLE}, {@link #JOBLIB}, {@link #TORCHSCRIPT} and {@link #ENGINE} files can run
 * code when loaded: a service refuses them unless started with {@code --allow-code-format}
 * (docs/security.md). {@link #SKOPS}, {@link #STATE_DICT} and {@link #ONNX} are data.
 */
public enum Format {
  /** A TorchScript file ({@code torch.jit.save}); PyTorch's default. Code-capable. */
  TORCHSCRIPT("torchscript"),
  /** A PyTorch state dict, loaded into an allow-listed {@code model_class}. */
  STATE_DICT("state_dict"),
  /** An ONNX model file. */
  ONNX("onnx"),
  /** A pickled scikit-learn estimator; scikit-learn's default. Code-capable. */
  PICKLE("pickle"),
  /** A joblib-dumped scikit-learn estimator. Code-capable. */
  JOBLIB("joblib"),
  /** A scikit-learn estimator saved with {@code skops.io.dump}: data only, the safe choice. */
  SKOPS("skops"),
  /** A serialized TensorRT engine. Code-capable (engines can embed plugin libraries). */
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
