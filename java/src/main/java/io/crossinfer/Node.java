package io.crossinfer;

/**
 * A node of an inference spec: a {@link Model}, an {@link ABTest}, a {@link Sequence} or a
 * {@link Keyed} router. Nodes nest (an A/B arm can be a sequence), and every node is also a
 * {@code PTransform<PCollection<Row>, InferenceResult>} that can be applied on its own.
 *
 * <p>Names must be 1-100 letters, digits, {@code _}, {@code -} or {@code .}, starting with a
 * letter or digit, and unique within one spec: output rows name the model (and the path through
 * the spec) that produced them.
 */
public sealed interface Node permits InferenceTransform {
  /** The node's name, unique within its spec. */
  String name();

  /** The node kind as in the spec: {@code model}, {@code ab_test}, {@code sequence}, {@code keyed}. */
  String kind();

  /**
   * The spec document with this node at its root, {@code {"version": 1, "node": {...}}}, as
   * pretty-printed canonical JSON (fields in spec order, defaults left out). Checks the spec first.
   *
   * @throws SpecException naming every invalid setting
   */
  String toSpecJson();
}
