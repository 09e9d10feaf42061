package io.crossinfer;

import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PInput;
import org.apache.beam.sdk.values.POutput;
import org.apache.beam.sdk.values.PValue;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TupleTag;

/**
 * The two outputs of a crossinfer transform. Every input element ends up in exactly one of them
 * (once per arm for a mirrored {@link ABTest}): nothing is dropped.
 *
 * <ul>
 *   <li>{@link #output()}: one row per inferred element: the input fields, then {@code model}
 *       (STRING), {@code path} (STRING, e.g. {@code digits_ab/control/digits_lr}), {@code
 *       inference} (ARRAY&lt;DOUBLE&gt;), and the nullable {@code label} (INT64), {@code score}
 *       (DOUBLE), {@code labels} (ARRAY&lt;INT64&gt;), {@code scores} (ARRAY&lt;DOUBLE&gt;) set by
 *       the {@link Op#argmax()}, {@link Op#threshold(double)} and {@link Op#topK(int)} ops; with
 *       {@link InferenceTransform#withTiming()}, then {@code model_ms} (ARRAY&lt;DOUBLE&gt;) and
 *       {@code batch_size} (ARRAY&lt;INT64&gt;), one entry per model on the row's path. An input
 *       field with one of these names is replaced.
 *   <li>{@link #failures()}: one row per element that could not be inferred: {@code element} (the
 *       input row, untouched), {@code node} (the failing node's path, {@code input} for malformed
 *       input) and {@code error} (the message).
 * </ul>
 *
 * <p>Both collections carry schemas, so they can be read with {@code row.getString("model")},
 * used with Beam SQL, or converted with {@code Convert.fromRows(MyPojo.class)}.
 *
 * <pre>{@code
 * InferenceResult result = rows.apply(abTest);
 * result.output().apply(MapElements.into(TypeDescriptors.strings())
 *     .via(row -> row.getString("model") + " -> " + row.getInt64("label")));
 * result.failures().apply(MapElements.into(TypeDescriptors.strings())
 *     .via(row -> row.getString("node") + ": " + row.getString("error")));
 * }</pre>
 */
public final class InferenceResult implements PInput, POutput {
  /** Output tag of the results, as named by the wire contract. */
  public static final String RESULTS_TAG = "results";
  /** Output tag of the failures, as named by the wire contract. */
  public static final String FAILURES_TAG = "failures";

  /** Result field: name of the model node that produced the row. */
  public static final String MODEL = "model";
  /** Result field: names from the root of the spec to the model, {@code /}-joined. */
  public static final String PATH = "path";
  /** Result field: the post-processed model output, flattened. */
  public static final String INFERENCE = "inference";
  /** Result field: the label set by argmax or threshold, else null. */
  public static final String LABEL = "label";
  /** Result field: the score set by argmax or threshold, else null. */
  public static final String SCORE = "score";
  /** Result field: the labels set by top_k, else null. */
  public static final String LABELS = "labels";
  /** Result field: the scores set by top_k, else null. */
  public static final String SCORES = "scores";
  /**
   * Result field with {@link InferenceTransform#withTiming()}: per model on the row's path, in
   * path order, its call's wall time divided by the call's rows, in milliseconds.
   */
  public static final String MODEL_MS = "model_ms";
  /**
   * Result field with {@link InferenceTransform#withTiming()}: per model on the row's path, the
   * rows of its call (the batch the row ran in).
   */
  public static final String BATCH_SIZE = "batch_size";
  /** Failure field: the original input row. */
  public static final String ELEMENT = "element";
  /** Failure field: path of the failing node, or {@code input} for malformed input. */
  public static final String NODE = "node";
  /** Failure field: what went wrong. */
  public static final String ERROR = "error";

  private final Pipeline pipeline;
  private final PCollection<Row> output;
  private final PCollection<Row> failures;
  private final String specJson;
  private final String expansionService;

  InferenceResult(
      Pipeline pipeline,
      PCollection<Row> output,
      PCollection<Row> failures,
      String specJson,
      String expansionService) {
    this.pipeline = pipeline;
    this.output = output;
    this.failures = failures;
    this.specJson = specJson;
    this.expansionService = expansionService;
  }

  /** The spec document the results came from (JSON), e.g. for {@link ExperimentReport}. */
  public String specJson() {
    return specJson;
  }

  /** The address of the expansion service that expanded the transform. */
  public String expansionService() {
    return expansionService;
  }

  /**
   * Applies a transform that reads both outputs, e.g. {@code result.apply("Report",
   * ExperimentReport.of(result).withGroundTruth("digit"))}.
   */
  public <OutputT extends POutput> OutputT apply(
      String name, PTransform<InferenceResult, OutputT> transform) {
    return Pipeline.applyTransform(name, this, transform);
  }

  /** The inferred rows. */
  public PCollection<Row> output() {
    return output;
  }

  /** The rows that could not be inferred, with the failing node and the error. */
  public PCollection<Row> failures() {
    return failures;
  }

  @Override
  public Pipeline getPipeline() {
    return pipeline;
  }

  @Override
  public Map<TupleTag<?>, PValue> expand() {
    Map<TupleTag<?>, PValue> outputs = new LinkedHashMap<>();
    outputs.put(new TupleTag<Row>(RESULTS_TAG), output);
    outputs.put(new TupleTag<Row>(FAILURES_TAG), failures);
    return outputs;
  }

  @Override
  public void finishSpecifyingOutput(
      String transformName, PInput input, PTransform<?, ?> transform) {}
}
