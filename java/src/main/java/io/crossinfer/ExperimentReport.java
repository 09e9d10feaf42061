package io.crossinfer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.Schema.FieldType;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.Flatten;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionList;
import org.apache.beam.sdk.values.PCollectionTuple;
import org.apache.beam.sdk.values.PInput;
import org.apache.beam.sdk.values.POutput;
import org.apache.beam.sdk.values.PValue;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TupleTag;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The experiment report over an A/B or mirror result, computed by the expansion service's {@code
 * beam:transform:crossinfer:experiment_report:v1} (the same transform as Python's {@code
 * crossinfer.experiments.ExperimentReport}; docs/experiments.md).
 *
 * <pre>{@code
 * InferenceResult ab = rows.apply(ABTest.of(lr, mlp).split(50, 50).withExpansionService(address));
 * ExperimentReport.Output report =
 *     ab.apply("Report", ExperimentReport.of(ab).withGroundTruth("digit"));
 * report.arms();   // PCollection<Row>: one per (window, arm): counts, share, SRM p-value,
 *                  // label histogram, score and accuracy with intervals, latency percentiles
 * report.pairs();  // PCollection<Row>: one per (window, other arm): difference vs the control
 *                  // with interval and p-value; for a mirror agreement and label flips
 * }</pre>
 *
 * <p>Per window of the input (the global window in batch; fixed or sliding windows in streaming),
 * emitted when the window closes. The rows' schemas are fixed by the wire contract
 * (docs/wire-contract.md, "Experiment report"). Result and failure rows are projected here, in
 * Java, to the report's input rows ({@link #INPUT_SCHEMA}): only those few fields cross to the
 * service.
 */
public final class ExperimentReport extends PTransform<InferenceResult, ExperimentReport.Output> {
  private static final long serialVersionUID = 1L;
  private static final ObjectMapper MAPPER = new ObjectMapper();

  /** The report's URN. */
  public static final String URN = "beam:transform:crossinfer:experiment_report:v1";
  /** Output tag of the per-arm rows. */
  public static final String ARMS_TAG = "arms";
  /** Output tag of the per-arm-pair rows. */
  public static final String PAIRS_TAG = "pairs";

  /** What the report compares against the ground truth. */
  public enum Metric {
    /** {@code label == ground truth}; intervals: Wilson; arms: Agresti-Caffo or McNemar. */
    ACCURACY,
    /** {@code |inference[0] - ground truth|} for regression outputs; t intervals, Welch. */
    MEAN_ABS_ERROR
  }

  /**
   * The report's input rows: {@code path} (a result's path or a failure's node), {@code failed},
   * {@code label}, {@code score}, {@code value} (the single inference value of a regression),
   * {@code truth}, {@code id}, the engine's timing fields {@code model_ms} and {@code
   * batch_size} (per model stage on the route), and {@code key} (the key field of a hash split,
   * whose sample-ratio-mismatch test counts distinct keys per arm; null otherwise).
   */
  public static final Schema INPUT_SCHEMA =
      Schema.builder()
          .addStringField("path")
          .addBooleanField("failed")
          .addNullableField("label", FieldType.INT64)
          .addNullableField("score", FieldType.DOUBLE)
          .addNullableField("value", FieldType.DOUBLE)
          .addNullableField("truth", FieldType.DOUBLE)
          .addNullableField("id", FieldType.STRING)
          .addNullableField(InferenceResult.MODEL_MS, FieldType.array(FieldType.DOUBLE))
          .addNullableField(InferenceResult.BATCH_SIZE, FieldType.array(FieldType.INT64))
          .addNullableField("key", FieldType.STRING)
          .build();

  private final String specJson;
  private final boolean mirror;
  private final boolean hashed;
  private final @Nullable String expansionService;
  private final @Nullable String groundTruth;
  private final String idField;
  private final String keyField;
  private final Metric metric;
  private final @Nullable String control;
  private final @Nullable Double confidence;

  private ExperimentReport(
      String specJson,
      boolean mirror,
      boolean hashed,
      @Nullable String expansionService,
      @Nullable String groundTruth,
      String idField,
      String keyField,
      Metric metric,
      @Nullable String control,
      @Nullable Double confidence) {
    this.specJson = specJson;
    this.mirror = mirror;
    this.hashed = hashed;
    this.expansionService = expansionService;
    this.groundTruth = groundTruth;
    this.idField = idField;
    this.keyField = keyField;
    this.metric = metric;
    this.control = control;
    this.confidence = confidence;
  }

  /**
   * The report of {@code abResult}: its spec (arms, weights, split) and expansion service.
   *
   * @throws IllegalArgumentException when the result is not an A/B test's
   */
  public static ExperimentReport of(InferenceResult abResult) {
    return ofSpec(abResult.specJson(), abResult.expansionService());
  }

  /** The report of results produced by {@code abTest}; set the service with {@link #withExpansionService}. */
  public static ExperimentReport of(ABTest abTest) {
    return ofSpec(abTest.toSpecJson(), null);
  }

  private static ExperimentReport ofSpec(String specJson, @Nullable String service) {
    JsonNode node;
    try {
      node = MAPPER.readTree(specJson).path("node");
    } catch (IOException e) {
      throw new IllegalArgumentException("ExperimentReport: the spec is not JSON", e);
    }
    if (!"ab_test".equals(node.path("kind").asText())) {
      throw new IllegalArgumentException(
          "ExperimentReport: the report reads an A/B test's results; the spec's root is a '"
              + node.path("kind").asText()
              + "'");
    }
    String split = node.path("split").asText();
    return new ExperimentReport(
        specJson,
        "mirror".equals(split),
        "hash".equals(split),
        service,
        null,
        "id",
        InferenceTransform.DEFAULT_KEY_FIELD,
        Metric.ACCURACY,
        null,
        null);
  }

  /** The input field with the true label (or value, for {@link Metric#MEAN_ABS_ERROR}). */
  public ExperimentReport withGroundTruth(String field) {
    return new ExperimentReport(
        specJson, mirror, hashed, expansionService, checkField(field, "withGroundTruth"), idField,
        keyField, metric, control, confidence);
  }

  /** The input field identifying an element, joining a mirror's arms (default {@code id}). */
  public ExperimentReport withIdField(String field) {
    return new ExperimentReport(
        specJson, mirror, hashed, expansionService, groundTruth, checkField(field, "withIdField"),
        keyField, metric, control, confidence);
  }

  /**
   * The input field a hash split is sticky on (default {@code key}, as the A/B test's default;
   * name the field given to the A/B test's {@code withKeyField}): for a hash split its values
   * cross to the service, whose sample-ratio-mismatch test counts distinct keys per arm (a hash
   * split assigns keys, not elements). Results without the field count rows.
   */
  public ExperimentReport withKeyField(String field) {
    return new ExperimentReport(
        specJson, mirror, hashed, expansionService, groundTruth, idField,
        checkField(field, "withKeyField"), metric, control, confidence);
  }

  /** What to compare against the ground truth (default {@link Metric#ACCURACY}). */
  public ExperimentReport withMetric(Metric metric) {
    return new ExperimentReport(
        specJson, mirror, hashed, expansionService, groundTruth, idField, keyField, metric,
        control, confidence);
  }

  /** The arm the others are compared with (default: the first arm). */
  public ExperimentReport withControl(String arm) {
    return new ExperimentReport(
        specJson, mirror, hashed, expansionService, groundTruth, idField, keyField, metric, arm,
        confidence);
  }

  /**
   * The level of every interval, in (0, 1) (default 0.95).
   *
   * @throws IllegalArgumentException outside (0, 1)
   */
  public ExperimentReport withConfidence(double level) {
    if (!(level > 0 && level < 1)) {
      throw new IllegalArgumentException("withConfidence: " + level + " is not in (0, 1)");
    }
    return new ExperimentReport(
        specJson, mirror, hashed, expansionService, groundTruth, idField, keyField, metric,
        control, level);
  }

  /** The expansion service that computes the report (default: the A/B result's). */
  public ExperimentReport withExpansionService(String address) {
    return new ExperimentReport(
        specJson, mirror, hashed, address, groundTruth, idField, keyField, metric, control,
        confidence);
  }

  private static String checkField(String field, String method) {
    if (field == null || !field.matches("[A-Za-z][A-Za-z0-9_]*")) {
      throw new IllegalArgumentException(method + ": '" + field + "' is not a field name");
    }
    return field;
  }

  @Override
  public Output expand(InferenceResult input) {
    String address = expansionService;
    if (address == null) {
      address =
          input.getPipeline().getOptions().as(CrossinferOptions.class)
              .getCrossinferExpansionService();
    }
    if (address == null || address.isBlank()) {
      throw new IllegalArgumentException(
          "ExperimentReport: no expansion service: call withExpansionService(\"host:port\")");
    }
    Schema results = input.output().getSchema();
    if (groundTruth != null && !results.hasField(groundTruth)) {
      throw new IllegalArgumentException(
          "withGroundTruth: the results have no field '"
              + groundTruth
              + "' (fields: "
              + String.join(", ", results.getFieldNames())
              + ")");
    }
    // Like Python's ExperimentReport: the id only matters (and only crosses) for a mirror, the
    // key for a hash split.
    String id = mirror ? idField : null;
    String key = hashed ? keyField : null;
    PCollection<Row> rows =
        PCollectionList.of(
                input
                    .output()
                    .apply("Results in", ParDo.of(new ToReportInput(groundTruth, id, key, false)))
                    .setRowSchema(INPUT_SCHEMA))
            .and(
                input
                    .failures()
                    .apply("Failures in", ParDo.of(new ToReportInput(groundTruth, id, key, true)))
                    .setRowSchema(INPUT_SCHEMA))
            .apply("Report input", Flatten.pCollections());
    byte[] payload =
        ExpansionPayload.encodeReport(
            specJson, groundTruth, metric.name().toLowerCase(Locale.ROOT), control, confidence);
    PCollectionTuple outputs = Expander.external(rows, URN, payload, address, "ExperimentReport");
    for (String tag : List.of(ARMS_TAG, PAIRS_TAG)) {
      if (!outputs.has(tag)) {
        throw new CrossinferException(
            "the expansion service at "
                + address
                + " returned no '"
                + tag
                + "' output for the experiment report (is it a crossinfer service with the"
                + " report URN?)");
      }
    }
    return new Output(
        input.getPipeline(), outputs.<Row>get(ARMS_TAG), outputs.<Row>get(PAIRS_TAG));
  }

  /** A result or failure row as a report input row (see {@link #INPUT_SCHEMA}). */
  static final class ToReportInput extends DoFn<Row, Row> {
    private static final long serialVersionUID = 1L;

    private final @Nullable String groundTruth;
    private final @Nullable String idField;
    private final @Nullable String keyField;
    private final boolean failed;

    ToReportInput(
        @Nullable String groundTruth,
        @Nullable String idField,
        @Nullable String keyField,
        boolean failed) {
      this.groundTruth = groundTruth;
      this.idField = idField;
      this.keyField = keyField;
      this.failed = failed;
    }

    @ProcessElement
    public void process(@Element Row row, OutputReceiver<Row> out) {
      if (failed) {
        Row element = row.getRow(InferenceResult.ELEMENT);
        out.output(
            Row.withSchema(INPUT_SCHEMA)
                .addValues(
                    row.getString(InferenceResult.NODE), true, null, null, null,
                    number(element, groundTruth), text(element, idField), null, null,
                    text(element, keyField))
                .build());
        return;
      }
      Collection<Object> inference = row.getArray(InferenceResult.INFERENCE);
      Double value =
          inference != null && inference.size() == 1
              ? ((Number) inference.iterator().next()).doubleValue()
              : null;
      out.output(
          Row.withSchema(INPUT_SCHEMA)
              .addValues(
                  row.getString(InferenceResult.PATH),
                  false,
                  row.getInt64(InferenceResult.LABEL),
                  row.getDouble(InferenceResult.SCORE),
                  value,
                  number(row, groundTruth),
                  text(row, idField),
                  list(row, InferenceResult.MODEL_MS, false),
                  list(row, InferenceResult.BATCH_SIZE, true),
                  text(row, keyField))
              .build());
    }

    private static @Nullable Double number(@Nullable Row row, @Nullable String field) {
      if (row == null || field == null || !row.getSchema().hasField(field)) {
        return null;
      }
      Object v = row.getValue(field);
      if (v instanceof Number) {
        return ((Number) v).doubleValue();
      }
      if (v instanceof Boolean) {
        return ((Boolean) v) ? 1.0 : 0.0;
      }
      return null;
    }

    private static @Nullable String text(@Nullable Row row, @Nullable String field) {
      if (row == null || field == null || !row.getSchema().hasField(field)) {
        return null;
      }
      Object v = row.getValue(field);
      return v == null ? null : v.toString();
    }

    /** The engine's timing fields (docs/experiments.md), when the results carry them. */
    private static @Nullable List<Object> list(Row row, String field, boolean integers) {
      if (!row.getSchema().hasField(field)) {
        return null;
      }
      Collection<Object> values = row.getArray(field);
      if (values == null) {
        return null;
      }
      List<Object> out = new ArrayList<>(values.size());
      for (Object v : values) {
        if (!(v instanceof Number)) {
          return null;
        }
        out.add(integers ? (Object) ((Number) v).longValue() : ((Number) v).doubleValue());
      }
      return out;
    }
  }

  /** The report's two outputs. */
  public static final class Output implements POutput {
    private final Pipeline pipeline;
    private final PCollection<Row> arms;
    private final PCollection<Row> pairs;

    Output(Pipeline pipeline, PCollection<Row> arms, PCollection<Row> pairs) {
      this.pipeline = pipeline;
      this.arms = arms;
      this.pairs = pairs;
    }

    /**
     * One row per (window, arm): {@code experiment}, {@code window_start_ms}/{@code
     * window_end_ms} (null in the global window), {@code arm}, {@code count}, {@code failures},
     * {@code share}, {@code expected_share}, {@code srm_p_value}, the label histogram, score and
     * metric with intervals, latency percentiles, and the window's pane ({@code pane_index},
     * {@code pane_timing}: a late pane's rows restate the window's report over every result so
     * far; read a window's highest {@code pane_index}) (docs/wire-contract.md).
     */
    public PCollection<Row> arms() {
      return arms;
    }

    /**
     * One row per (window, other arm): the difference from the control with its interval, {@code
     * p_value} and {@code test}; for a mirror {@code pairs}, {@code agreement}, the label flips
     * and {@code mean_abs_score_diff}; {@code pane_index} and {@code pane_timing} as in {@link
     * #arms()}.
     */
    public PCollection<Row> pairs() {
      return pairs;
    }

    @Override
    public Pipeline getPipeline() {
      return pipeline;
    }

    @Override
    public Map<TupleTag<?>, PValue> expand() {
      Map<TupleTag<?>, PValue> outputs = new LinkedHashMap<>();
      outputs.put(new TupleTag<Row>(ARMS_TAG), arms);
      outputs.put(new TupleTag<Row>(PAIRS_TAG), pairs);
      return outputs;
    }

    @Override
    public void finishSpecifyingOutput(
        String transformName, PInput input, PTransform<?, ?> transform) {}
  }
}
