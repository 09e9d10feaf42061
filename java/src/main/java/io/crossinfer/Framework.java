package io.crossinfer;

/** The model frameworks a {@link Model} can use; the spec's {@code framework} field. */
public enum Framework {
  /** PyTorch: a TorchScript file or a state dict plus an allow-listed model class. */
  PYTORCH("pytorch", Format.TORCHSCRIPT, Format.STATE_DICT),
  /** ONNX Runtime. */
  ONNX("onnx", Format.ONNX),
  /** scikit-learn: a pickle, joblib or skops file. */
  SKLEARN("sklearn", Format.PICKLE, Format.JOBLIB, Format.SKOPS),
  /** NVIDIA TensorRT: a serialized engine (GPU only). */
  TENSOR_RT("tensorrt", Format.ENGINE),
  /** An allow-listed custom Beam {@code ModelHandler} class on the service side. */
  CUSTOM("custom", Format.CUSTOM);

  private final String specName;
  private final Format[] formats;

  Framework(String specName, Format... formats) {
    this.specName = specName;
    this.formats = formats;
  }

  /** The name used in the spec JSON, e.g. {@code "pytorch"}. */
  public String specName() {
    return specName;
  }

  /** The format used when none is given. */
  public Format defaultFormat() {
    return formats[0];
  }

  /** Whether this framework reads files of {@code format}. */
  public boolean reads(Format format) {
    for (Format f : formats) {
      if (f == format) {
        return true;
      }
    }
    return false;
  }

  /** The formats this framework reads, as spec names, for error messages. */
  String formatList() {
    StringBuilder out = new StringBuilder();
    for (Format f : formats) {
      if (out.length() > 0) {
        out.append(", ");
      }
      out.append('\'').append(f.specName()).append('\'');
    }
    return out.toString();
  }
}
