package io.crossinfer;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Runs a spec given as JSON text, e.g. a file written by a Python team ({@code
 * crossinfer.spec.spec_to_json}) or by {@link Node#toSpecJson()}. The URN is chosen from the root
 * node's kind; the expansion service checks the whole document and refuses it, naming the bad
 * field, at pipeline construction.
 *
 * <pre>{@code
 * InferenceResult result = rows.apply(
 *     Inference.ofSpecJson(Files.readString(Path.of("ab.json")))
 *         .withExpansionService("localhost:8097"));
 * }</pre>
 *
 * <p>Prefer the typed builders ({@link Model}, {@link ABTest}, {@link Sequence}, {@link Keyed})
 * when writing specs in Java.
 */
public final class Inference extends PTransform<PCollection<Row>, InferenceResult> {
  private static final long serialVersionUID = 1L;
  private static final Set<String> KINDS = Set.of("model", "ab_test", "sequence", "keyed");

  private final String specJson;
  private final String kind;
  private final String name;
  private final boolean needsKey;
  private final InferenceTransform.Io io;

  private Inference(
      String specJson, String kind, String name, boolean needsKey, InferenceTransform.Io io) {
    this.specJson = specJson;
    this.kind = kind;
    this.name = name;
    this.needsKey = needsKey;
    this.io = io;
  }

  /**
   * A transform for the spec document {@code json} ({@code {"version": 1, "node": {...}}}).
   *
   * @throws SpecException if it is not JSON, has another version, or its root has no known kind
   */
  public static Inference ofSpecJson(String json) {
    if (json == null) {
      throw new IllegalArgumentException("Inference.ofSpecJson: json must not be null");
    }
    JsonNode doc;
    try {
      doc = Json.parse(json);
    } catch (IllegalArgumentException e) {
      throw new SpecException(List.of("$: " + e.getMessage()));
    }
    List<String> problems = new ArrayList<>();
    if (!doc.isObject()) {
      throw new SpecException(List.of("$: expected an object {\"version\": 1, \"node\": {...}}"));
    }
    JsonNode version = doc.get("version");
    if (version == null || !version.isIntegralNumber()
        || version.asInt() != InferenceTransform.SPEC_VERSION) {
      problems.add(
          "version: expected " + InferenceTransform.SPEC_VERSION + ", got "
              + (version == null ? "nothing" : version.toString()));
    }
    JsonNode node = doc.get("node");
    String kind = node == null ? null : node.path("kind").asText(null);
    if (node == null || !node.isObject()) {
      problems.add("node: is required");
    } else if (kind == null || !KINDS.contains(kind)) {
      problems.add(
          "node.kind: expected one of 'model', 'ab_test', 'sequence', 'keyed', got "
              + node.path("kind"));
    }
    if (!problems.isEmpty()) {
      throw new SpecException(problems);
    }
    String name = node.path("name").asText("");
    return new Inference(
        Json.compact(doc), kind, name, needsKey(node), InferenceTransform.Io.DEFAULT);
  }

  private static boolean needsKey(JsonNode node) {
    String kind = node.path("kind").asText("");
    if (kind.equals("keyed")
        || (kind.equals("ab_test") && node.path("split").asText("").equals("hash"))) {
      return true;
    }
    for (JsonNode arm : node.path("arms")) {
      if (needsKey(arm.path("node"))) {
        return true;
      }
    }
    for (JsonNode stage : node.path("stages")) {
      if (needsKey(stage)) {
        return true;
      }
    }
    return false;
  }

  /** See {@link InferenceTransform#withFeaturesField(String)}. */
  public Inference withFeaturesField(String field) {
    return new Inference(specJson, kind, name, needsKey,
        io.withFeaturesField(field));
  }

  /** See {@link InferenceTransform#withKeyField(String)}. */
  public Inference withKeyField(String field) {
    return new Inference(specJson, kind, name, needsKey,
        io.withKeyField(field));
  }

  /** See {@link InferenceTransform#withExpansionService(String)}. */
  public Inference withExpansionService(String address) {
    return new Inference(specJson, kind, name, needsKey,
        io.withExpansionService(address));
  }

  /** See {@link InferenceTransform#withTransport(Transport)}. */
  public Inference withTransport(Transport transport) {
    if (transport == null) {
      throw new IllegalArgumentException("withTransport: transport must not be null");
    }
    return new Inference(specJson, kind, name, needsKey, io.withTransport(transport));
  }

  /** See {@link InferenceTransform#withTiming()}. */
  public Inference withTiming() {
    return new Inference(specJson, kind, name, needsKey, io.withTiming());
  }

  /** The URN chosen from the root node's kind. */
  public String urn() {
    return "beam:transform:crossinfer:" + kind + ":v1";
  }

  /** The spec document, compact. */
  public String specJson() {
    return specJson;
  }

  /** The root node's name, or an empty string. */
  public @Nullable String nodeName() {
    return name;
  }

  @Override
  public InferenceResult expand(PCollection<Row> input) {
    return Expander.expand(input, urn(), kind + " '" + name + "'", specJson, io, needsKey);
  }
}
