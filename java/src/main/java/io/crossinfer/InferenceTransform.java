package io.crossinfer;

import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * What every crossinfer transform shares: the spec it encodes, the input field names and the
 * expansion service it calls.
 *
 * <p>Applying a transform checks the spec (throwing {@link SpecException}) and the input schema
 * (throwing {@link IllegalArgumentException}), then asks the expansion service to expand the
 * spec's URN with an {@code ExternalConfigurationPayload} of {@code spec}, {@code features_field}
 * and {@code key_field} (and {@code timing} with {@link #withTiming()}). A refusal from the service is thrown as {@link ExpansionException} with
 * the service's message, at pipeline construction.
 *
 * <p>When a node is nested in another (an arm, a stage, a route), only the root's field names and
 * expansion service are used; setting them on a nested node is an error.
 *
 * @param <T> the concrete transform type, returned by the {@code withX} methods
 */
public abstract sealed class InferenceTransform<T extends InferenceTransform<T>>
    extends PTransform<PCollection<Row>, InferenceResult> implements Node
    permits Model, ABTest, Sequence, Keyed {
  private static final long serialVersionUID = 1L;

  /** Version of the spec document this library writes. */
  public static final int SPEC_VERSION = 1;

  static final Pattern NAME = Pattern.compile("^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$");
  static final String DEFAULT_FEATURES_FIELD = "features";
  static final String DEFAULT_KEY_FIELD = "key";

  /** Input field names, the service address, the transport and timing; immutable. */
  static final class Io implements Serializable {
    private static final long serialVersionUID = 1L;
    static final Io DEFAULT = new Io(null, null, null, null, false);

    final @Nullable String featuresField;
    final @Nullable String keyField;
    final @Nullable String expansionService;
    final @Nullable Transport transport;
    /** Whether results carry {@code model_ms} and {@code batch_size}. */
    final boolean timing;

    Io(
        @Nullable String featuresField,
        @Nullable String keyField,
        @Nullable String expansionService,
        @Nullable Transport transport,
        boolean timing) {
      this.featuresField = featuresField;
      this.keyField = keyField;
      this.expansionService = expansionService;
      this.transport = transport;
      this.timing = timing;
    }

    Io withFeaturesField(String field) {
      return new Io(field, keyField, expansionService, transport, timing);
    }

    Io withKeyField(String field) {
      return new Io(featuresField, field, expansionService, transport, timing);
    }

    Io withExpansionService(String address) {
      return new Io(featuresField, keyField, address, transport, timing);
    }

    Io withTransport(Transport value) {
      return new Io(featuresField, keyField, expansionService, value, timing);
    }

    Io withTiming() {
      return new Io(featuresField, keyField, expansionService, transport, true);
    }

    boolean isDefault() {
      return featuresField == null
          && keyField == null
          && expansionService == null
          && transport == null
          && !timing;
    }
  }

  final Io io;

  InferenceTransform(Io io) {
    this.io = io;
  }

  /** A copy of this transform with other I/O settings. */
  abstract T withIo(Io io);

  /** This node as canonical JSON (defaults left out). */
  abstract ObjectNode nodeJson();

  /** Check this node's own settings (not its children's), adding problems under {@code path}. */
  abstract void checkNode(String path, Problems problems);

  /** Direct children with their paths relative to this node, e.g. {@code arms[0].node}. */
  abstract List<Map.Entry<String, InferenceTransform<?>>> children();

  /**
   * Read the numeric array to infer on from input field {@code field} (default {@code
   * features}). The field must be an ARRAY or ITERABLE of DOUBLE, FLOAT or an integer type, or
   * BYTES holding packed little-endian float32 values ({@link PackedFeatures}, the cheapest
   * encoding across the language boundary).
   */
  public T withFeaturesField(String field) {
    requireFieldName(field, "withFeaturesField");
    return withIo(io.withFeaturesField(field));
  }

  /**
   * Read the routing key ({@link Keyed}) and sticky-split key ({@link ABTest#withHashSplit()})
   * from input field {@code field} (default {@code key}), a STRING.
   */
  public T withKeyField(String field) {
    requireFieldName(field, "withKeyField");
    return withIo(io.withKeyField(field));
  }

  /**
   * Expand through the crossinfer expansion service at {@code address} ({@code host:port}).
   * Without it, the pipeline option {@code --crossinferExpansionService} is used.
   */
  public T withExpansionService(String address) {
    if (address == null || address.isBlank()) {
      throw new IllegalArgumentException(
          "withExpansionService: address must be host:port of a running crossinfer expansion"
              + " service, got " + (address == null ? "null" : "an empty string"));
    }
    if (!address.contains(":")) {
      throw new IllegalArgumentException(
          "withExpansionService: address must be host:port, got '" + address + "'");
    }
    return withIo(io.withExpansionService(address));
  }

  /**
   * How rows cross to the service: {@link Transport#BATCHES} (the default where the input allows
   * it: bounded, in the global window) or {@link Transport#ROWS}. Results, failures and schemas
   * are the same either way.
   *
   * @throws IllegalArgumentException if {@code transport} is null
   */
  public T withTransport(Transport transport) {
    if (transport == null) {
      throw new IllegalArgumentException("withTransport: transport must not be null");
    }
    return withIo(io.withTransport(transport));
  }

  /**
   * Measure each model call and add two fields to every result row, after the output fields:
   * {@link InferenceResult#MODEL_MS} ({@code model_ms}, ARRAY&lt;DOUBLE&gt;: for each model on the
   * row's path, in path order, its call's wall time divided by the call's rows, in milliseconds)
   * and {@link InferenceResult#BATCH_SIZE} ({@code batch_size}, ARRAY&lt;INT64&gt;: the rows of
   * that call). {@link ExperimentReport} reads them for per-arm and per-stage latency
   * percentiles. Off by default: result rows keep their fields. Both transports carry them (the
   * payload's {@code timing} field, docs/wire-contract.md); an input field of either name is
   * replaced.
   */
  public T withTiming() {
    return withIo(io.withTiming());
  }

  /** Whether {@link #withTiming()} was set. */
  public boolean timing() {
    return io.timing;
  }

  /** The transport set with {@link #withTransport}, or null for the default. */
  public @Nullable Transport transport() {
    return io.transport;
  }

  /** The input field holding the features ({@code features} unless set). */
  public String featuresField() {
    return io.featuresField != null ? io.featuresField : DEFAULT_FEATURES_FIELD;
  }

  /** The input field holding the key ({@code key} unless set). */
  public String keyField() {
    return io.keyField != null ? io.keyField : DEFAULT_KEY_FIELD;
  }

  /** The expansion service address given with {@link #withExpansionService}, or null. */
  public @Nullable String expansionService() {
    return io.expansionService;
  }

  /** The URN this transform expands: {@code beam:transform:crossinfer:<kind>:v1}. */
  public final String urn() {
    return "beam:transform:crossinfer:" + kind() + ":v1";
  }

  @Override
  public final String toSpecJson() {
    checkSpec();
    return Json.pretty(document());
  }

  /** The spec document as compact JSON, as sent to the service. Checks the spec first. */
  public final String toCompactSpecJson() {
    checkSpec();
    return Json.compact(document());
  }

  final ObjectNode document() {
    ObjectNode doc = Json.object();
    doc.put("version", SPEC_VERSION);
    doc.set("node", nodeJson());
    return doc;
  }

  /**
   * Checks the whole spec tree: names, unique names, and every setting the Java side can check
   * (the service also checks what needs its machine: model files, allowed classes, frameworks).
   *
   * @throws SpecException naming every invalid setting with its field path
   */
  public final void checkSpec() {
    Problems problems = new Problems();
    Map<String, String> seen = new HashMap<>();
    for (Map.Entry<String, InferenceTransform<?>> entry : walk("node")) {
      String path = entry.getKey();
      InferenceTransform<?> node = entry.getValue();
      checkName(node.name(), path + ".name", problems);
      String first = seen.putIfAbsent(node.name(), path + ".name");
      if (first != null) {
        problems.add(
            path + ".name",
            "name '" + node.name() + "' is already used at " + first
                + "; node names must be unique within a spec");
      }
      if (!path.equals("node") && !node.io.isDefault()) {
        problems.add(
            path,
            "withFeaturesField/withKeyField/withExpansionService/withTransport/withTiming are set"
                + " on a nested node;"
                + " set them on the root transform that is applied");
      }
      node.checkNode(path, problems);
    }
    problems.throwIfAny();
  }

  final List<Map.Entry<String, InferenceTransform<?>>> walk(String path) {
    List<Map.Entry<String, InferenceTransform<?>>> out = new ArrayList<>();
    out.add(Map.entry(path, this));
    for (Map.Entry<String, InferenceTransform<?>> child : children()) {
      out.addAll(child.getValue().walk(path + "." + child.getKey()));
    }
    return out;
  }

  /** Whether any node routes or splits by key, so the input needs the key field. */
  final boolean needsKey() {
    for (Map.Entry<String, InferenceTransform<?>> entry : walk("node")) {
      InferenceTransform<?> node = entry.getValue();
      if (node instanceof Keyed
          || (node instanceof ABTest && ((ABTest) node).split() == ABTest.Split.HASH)) {
        return true;
      }
    }
    return false;
  }

  static void checkName(String name, String path, Problems problems) {
    if (name == null || !NAME.matcher(name).matches()) {
      problems.add(
          path,
          (name == null ? "null" : "'" + name + "'")
              + " is not a valid name: use 1-100 letters, digits, '_', '-' or '.', starting with"
              + " a letter or digit");
    }
  }

  static String requireName(String name, String what) {
    if (name == null || !NAME.matcher(name).matches()) {
      throw new IllegalArgumentException(
          what
              + ": "
              + (name == null ? "null" : "'" + name + "'")
              + " is not a valid name: use 1-100 letters, digits, '_', '-' or '.', starting"
              + " with a letter or digit");
    }
    return name;
  }

  private static void requireFieldName(String field, String what) {
    if (field == null || field.isBlank()) {
      throw new IllegalArgumentException(what + ": the field name must not be empty");
    }
  }

  /** The default step name, e.g. {@code ABTest(digits_ab)}: unique per node name. */
  @Override
  protected String getKindString() {
    return getClass().getSimpleName() + "(" + name() + ")";
  }

  @Override
  public void validate(@Nullable PipelineOptions options) {
    checkSpec();
  }

  @Override
  public InferenceResult expand(PCollection<Row> input) {
    checkSpec();
    return Expander.expand(
        input, urn(), kind() + " '" + name() + "'", Json.compact(document()), io, needsKey());
  }

  @Override
  public String toString() {
    return getClass().getSimpleName() + Json.compact(nodeJson());
  }

  @Override
  public boolean equals(@Nullable Object other) {
    if (!(other instanceof InferenceTransform) || other.getClass() != getClass()) {
      return false;
    }
    InferenceTransform<?> that = (InferenceTransform<?>) other;
    return nodeJson().equals(that.nodeJson())
        && java.util.Objects.equals(io.featuresField, that.io.featuresField)
        && java.util.Objects.equals(io.keyField, that.io.keyField)
        && java.util.Objects.equals(io.expansionService, that.io.expansionService)
        && io.transport == that.io.transport
        && io.timing == that.io.timing;
  }

  @Override
  public int hashCode() {
    return nodeJson().hashCode();
  }
}
