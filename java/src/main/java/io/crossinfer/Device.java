package io.crossinfer;

/** Where a model runs; the spec's {@code device} field. */
public enum Device {
  /** On the CPU (the default). */
  CPU("cpu"),
  /** On an NVIDIA GPU; the worker must have one. */
  GPU("gpu"),
  /** On a GPU when the worker has one, else on the CPU. */
  AUTO("auto");

  private final String specName;

  Device(String specName) {
    this.specName = specName;
  }

  /** The name used in the spec JSON, e.g. {@code "gpu"}. */
  public String specName() {
    return specName;
  }
}
