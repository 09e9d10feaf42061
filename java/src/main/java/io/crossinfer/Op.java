package io.crossinfer;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * A named pre- or post-processing step of a {@link Model}, run by the expansion service's
 * workers. Ops are data, never code: in the spec an op is a flat object such as {@code {"op":
 * "scale", "factor": 0.0625}}.
 *
 * <p>Pre-processing ops run per element on its features, before batching (so {@link
 * #padTruncate(int)} makes ragged inputs equal). Post-processing ops run on the model output;
 * {@link #argmax()}, {@link #topK(int)} and {@link #threshold(double)} also set the output rows'
 * {@code label}/{@code score} or {@code labels}/{@code scores} fields, and can only be used in
 * post-processing.
 *
 * <pre>{@code
 * Model lr = Model.sklearn("digits_lr", "/models/digits_lr.pkl")
 *     .withMethod(SklearnMethod.PREDICT_PROBA)
 *     .withPreprocess(Op.scale(1.0 / 16))
 *     .withPostprocess(Op.argmax());
 * }</pre>
 *
 * <p>Parameters are checked when the op is made; a bad one throws {@link
 * IllegalArgumentException} naming it.
 */
public final class Op implements Serializable {
  private static final long serialVersionUID = 1L;

  /** Ops that derive labels from model outputs: post-processing only. */
  static final Set<String> POST_ONLY = Set.of("argmax", "top_k", "threshold");

  private final String name;
  private final Map<String, Object> params;

  private Op(String name, Map<String, Object> params) {
    this.name = name;
    this.params = params;
  }

  /** The op's name in the spec, e.g. {@code "pad_truncate"}. */
  public String name() {
    return name;
  }

  /** The op's parameters, in spec order. */
  public Map<String, Object> params() {
    return params;
  }

  /** Cast the features to a numpy dtype, e.g. {@code "float32"}. */
  public static Op cast(String dtype) {
    requireText(dtype, "cast", "dtype");
    return op("cast", "dtype", dtype);
  }

  /**
   * Reshape each element (post-processing: each row of the batch); one dimension may be {@code
   * -1}, inferred from the size.
   */
  public static Op reshape(int... shape) {
    if (shape == null || shape.length == 0) {
      throw new IllegalArgumentException("Op.reshape: 'shape' needs at least one dimension");
    }
    int inferred = 0;
    List<Object> dims = new ArrayList<>();
    for (int d : shape) {
      if (d == -1) {
        inferred++;
      } else if (d <= 0) {
        throw new IllegalArgumentException(
            "Op.reshape: dimensions must be positive (or -1 for one inferred dimension), got "
                + Arrays.toString(shape));
      }
      dims.add(d);
    }
    if (inferred > 1) {
      throw new IllegalArgumentException(
          "Op.reshape: only one dimension can be -1, got " + Arrays.toString(shape));
    }
    return op("reshape", "shape", List.copyOf(dims));
  }

  /** Flatten each element to one dimension. */
  public static Op flatten() {
    return op("flatten");
  }

  /** {@code (x - mean) / std}, with one mean and standard deviation for every value. */
  public static Op normalize(double mean, double std) {
    requireFinite(mean, "normalize", "mean");
    requireFinite(std, "normalize", "std");
    if (std == 0) {
      throw new IllegalArgumentException("Op.normalize: 'std' must not be zero");
    }
    return op("normalize", "mean", mean, "std", std);
  }

  /** {@code (x - mean) / std}, per position (per channel). */
  public static Op normalize(double[] mean, double[] std) {
    List<Object> means = finiteList(mean, "normalize", "mean");
    List<Object> stds = finiteList(std, "normalize", "std");
    for (Object s : stds) {
      if ((Double) s == 0) {
        throw new IllegalArgumentException("Op.normalize: 'std' must not contain zero");
      }
    }
    return op("normalize", "mean", means, "std", stds);
  }

  /** Multiply every value by {@code factor}, e.g. {@code 1.0 / 16} for 0..16 pixel values. */
  public static Op scale(double factor) {
    requireFinite(factor, "scale", "factor");
    return op("scale", "factor", factor);
  }

  /** Multiply values position-wise by {@code factors}. */
  public static Op scale(double[] factors) {
    return op("scale", "factor", finiteList(factors, "scale", "factor"));
  }

  /** Pad with zeros or truncate each element's features to {@code length} values. */
  public static Op padTruncate(int length) {
    requirePositive(length, "padTruncate", "length");
    return op("pad_truncate", "length", length);
  }

  /** Pad with {@code value} or truncate each element's features to {@code length} values. */
  public static Op padTruncate(int length, double value) {
    requirePositive(length, "padTruncate", "length");
    requireFinite(value, "padTruncate", "value");
    return op("pad_truncate", "length", length, "value", value);
  }

  /** Softmax over the last axis. */
  public static Op softmax() {
    return op("softmax");
  }

  /** The logistic function, element-wise. */
  public static Op sigmoid() {
    return op("sigmoid");
  }

  /** Set {@code label} to the index of the largest output and {@code score} to its value. */
  public static Op argmax() {
    return op("argmax");
  }

  /** Set {@code labels}/{@code scores} to the {@code k} largest outputs, largest first. */
  public static Op topK(int k) {
    requirePositive(k, "topK", "k");
    return op("top_k", "k", k);
  }

  /**
   * Set {@code score} to the last output and {@code label} to 1 when it is at least {@code
   * threshold}, else 0.
   */
  public static Op threshold(double threshold) {
    requireFinite(threshold, "threshold", "threshold");
    return op("threshold", "threshold", threshold);
  }

  /** Like {@link #threshold(double)} on output {@code index} (negative counts from the end). */
  public static Op threshold(double threshold, int index) {
    requireFinite(threshold, "threshold", "threshold");
    return op("threshold", "threshold", threshold, "index", index);
  }

  /**
   * Any op by name, for ops newer than this library. The service checks the name and params;
   * prefer the typed factories.
   */
  public static Op named(String name, Map<String, ?> params) {
    requireText(name, "named", "name");
    return new Op(name, Json.copyParams(params, "Op.named(" + name + ") params"));
  }

  ObjectNode toJson() {
    ObjectNode out = Json.object();
    out.put("op", name);
    for (Map.Entry<String, Object> e : params.entrySet()) {
      out.set(e.getKey(), Json.toJson(e.getValue()));
    }
    return out;
  }

  private static Op op(String name, Object... keyValues) {
    LinkedHashMap<String, Object> params = new LinkedHashMap<>();
    for (int i = 0; i < keyValues.length; i += 2) {
      params.put((String) keyValues[i], keyValues[i + 1]);
    }
    return new Op(name, java.util.Collections.unmodifiableMap(params));
  }

  private static void requireText(String value, String op, String param) {
    if (value == null || value.isBlank()) {
      throw new IllegalArgumentException("Op." + op + ": '" + param + "' must not be empty");
    }
  }

  private static void requireFinite(double value, String op, String param) {
    if (!Double.isFinite(value)) {
      throw new IllegalArgumentException(
          "Op." + op + ": '" + param + "' must be a finite number, got " + value);
    }
  }

  private static void requirePositive(int value, String op, String param) {
    if (value <= 0) {
      throw new IllegalArgumentException(
          "Op." + op + ": '" + param + "' must be a positive integer, got " + value);
    }
  }

  private static List<Object> finiteList(double[] values, String op, String param) {
    if (values == null || values.length == 0) {
      throw new IllegalArgumentException(
          "Op." + op + ": '" + param + "' needs at least one number");
    }
    List<Object> out = new ArrayList<>();
    for (double v : values) {
      requireFinite(v, op, param);
      out.add(v);
    }
    return List.copyOf(out);
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof Op
        && name.equals(((Op) other).name)
        && params.equals(((Op) other).params);
  }

  @Override
  public int hashCode() {
    return Objects.hash(name, params);
  }

  @Override
  public String toString() {
    return Json.compact(toJson());
  }
}
