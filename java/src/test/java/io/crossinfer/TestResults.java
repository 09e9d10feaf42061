package io.crossinfer;

import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;

/**
 * Test access to {@link InferenceResult}'s package-private constructor: result rows a test made
 * (e.g. carrying the timing fields {@code model_ms} and {@code batch_size}, which the engine does
 * not write yet) as an A/B test's result, for {@link ExperimentReport}.
 */
public final class TestResults {
  private TestResults() {}

  /** {@code output} and {@code failures} as the result of the transform with {@code specJson}. */
  public static InferenceResult of(
      PCollection<Row> output, PCollection<Row> failures, String specJson, String service) {
    return new InferenceResult(output.getPipeline(), output, failures, specJson, service);
  }
}
