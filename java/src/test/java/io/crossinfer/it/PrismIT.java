package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.crossinfer.ABTest;
import io.crossinfer.InferenceResult;
import io.crossinfer.examples.DigitsData;
import io.crossinfer.examples.JsonLinesSink;
import io.crossinfer.launch.ExpansionServiceLauncher;
import io.crossinfer.launch.Jobs;
import io.crossinfer.launch.PrismJobServer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.testing.TestStream;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.windowing.FixedWindows;
import org.apache.beam.sdk.transforms.windowing.Window;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TimestampedValue;
import org.joda.time.Duration;
import org.joda.time.Instant;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Java pipelines with crossinfer transforms on Prism (built from the Go module proxy, run as a
 * local job server): a batch pipeline with a mirrored A/B test whose candidate arm is a sequence,
 * and a streaming pipeline (TestStream, fixed windows) with a sticky hash-split A/B test.
 */
public class PrismIT {
  private static final int ROWS = 100;
  private static final int STREAM_ROWS = 60;
  private static final long WINDOW_SECONDS = 10;

  private static ExpansionServiceLauncher service;
  private static PrismJobServer prism;
  private static JsonNode expected;
  private static Path batchOut;
  private static Path streamOut;
  private static PipelineResult.State batchState;
  private static PipelineResult.State streamState;

  @BeforeClass
  public static void runPipelines() throws Exception {
    Path python = E2e.python();
    Path models = E2e.models();
    Path prismBinary = E2e.prism();
    Path logs = E2e.workDir();
    service =
        ExpansionServiceLauncher.builder()
            .python(python)
            .modelRoots(models.toString())
            .logFile(logs.resolve("prism-expansion-service.log"))
            .start();
    prism = PrismJobServer.start(prismBinary, logs.resolve("prism.log"),
        java.time.Duration.ofMinutes(1));

    List<Row> rows = E2e.digits(ROWS);
    List<Row> streamRows = rows.subList(0, STREAM_ROWS);
    expected =
        E2e.pythonDirect(
            Map.of(
                "mirror", new E2e.Run(mirror().toSpecJson(), rows),
                "stream", new E2e.Run(E2e.abTest().toSpecJson(), streamRows)));

    batchOut = E2e.freshDir("prism-batch");
    Pipeline batch = Pipeline.create(prism.pipelineOptions());
    InferenceResult mirrored =
        batch
            .apply("Digits", Create.of(rows).withRowSchema(DigitsData.SCHEMA))
            .apply("Shadow test", mirror().withExpansionService(service.address()));
    mirrored.output().apply("Write results", JsonLinesSink.to(batchOut.resolve("results")));
    mirrored.failures().apply("Write failures", JsonLinesSink.to(batchOut.resolve("failures")));
    batchState = Jobs.waitUntilFinish(batch.run(), java.time.Duration.ofMinutes(4));

    streamOut = E2e.freshDir("prism-stream");
    PortablePipelineOptions options = prism.pipelineOptions();
    options.as(StreamingOptions.class).setStreaming(true);
    Pipeline stream = Pipeline.create(options);
    InferenceResult ab =
        stream
            .apply("Digits arriving", digitStream(streamRows))
            .apply("Fixed windows",
                Window.<Row>into(FixedWindows.of(Duration.standardSeconds(WINDOW_SECONDS))))
            .apply("A/B", E2e.abTest().withExpansionService(service.address()));
    ab.output().apply("Write results", JsonLinesSink.to(streamOut.resolve("results")));
    ab.failures().apply("Write failures", JsonLinesSink.to(streamOut.resolve("failures")));
    streamState = stream.run().waitUntilFinish(Duration.standardMinutes(4));
  }

  /** A shadow test: every element to the current model and to a PCA + MLP sequence. */
  static ABTest mirror() throws Exception {
    return ABTest.of(
            "shadow",
            ABTest.Arm.of("current", E2e.lr()),
            ABTest.Arm.of("candidate", E2e.sequence()))
        .withMirror();
  }

  /** Row i arrives at second i, in batches of ten with the watermark advancing between them. */
  @SuppressWarnings({"unchecked", "rawtypes"}) // a generic array for TestStream's varargs
  static TestStream<Row> digitStream(List<Row> rows) {
    TestStream.Builder<Row> builder =
        TestStream.create(RowCoder.of(DigitsData.SCHEMA)).advanceWatermarkTo(new Instant(0));
    for (int start = 0; start < rows.size(); start += 10) {
      TimestampedValue<Row>[] batch = new TimestampedValue[Math.min(10, rows.size() - start)];
      for (int i = 0; i < batch.length; i++) {
        long id = rows.get(start + i).getInt64("id");
        batch[i] = TimestampedValue.of(rows.get(start + i), new Instant(id * 1000));
      }
      builder =
          builder
              .addElements(batch[0], java.util.Arrays.copyOfRange(batch, 1, batch.length))
              .advanceWatermarkTo(new Instant((start + batch.length) * 1000L));
    }
    return builder.advanceWatermarkToInfinity();
  }

  @AfterClass
  public static void stop() {
    if (prism != null) {
      prism.close();
    }
    if (service != null) {
      service.close();
    }
  }

  @Test
  public void mirroredAbTestWithSequenceArmEqualsPythonDirectOnPrism() throws Exception {
    assertEquals(PipelineResult.State.DONE, batchState);
    assertEquals(0, JsonLinesSink.read(batchOut.resolve("failures")).size());
    List<ObjectNode> results = JsonLinesSink.read(batchOut.resolve("results"));
    assertEquals("every element reaches both arms", 2 * ROWS, results.size());
    E2e.assertSameResults(
        "mirror on Prism (Java vs Python-direct)",
        expected.get("mirror").get("results")::elements,
        results);
    Set<String> paths = new TreeSet<>();
    results.forEach(r -> paths.add(r.get("path").asText()));
    assertEquals(
        Set.of("shadow/current/digits_lr", "shadow/candidate/digits_seq/digits_pca_mlp"), paths);
  }

  @Test
  public void streamingAbTestOnPrismEqualsPythonDirect() throws Exception {
    assertEquals(PipelineResult.State.DONE, streamState);
    assertEquals(0, JsonLinesSink.read(streamOut.resolve("failures")).size());
    List<ObjectNode> results = JsonLinesSink.read(streamOut.resolve("results"));
    E2e.assertSameResults(
        "streaming A/B on Prism (Java vs Python-direct)",
        expected.get("stream").get("results")::elements,
        results);
  }

  @Test
  public void streamingResultsKeepTheirEventTimeWindows() throws Exception {
    assertEquals(PipelineResult.State.DONE, streamState);
    List<ObjectNode> results = JsonLinesSink.read(streamOut.resolve("results"));
    assertEquals(STREAM_ROWS, results.size());
    Set<Long> windows = new TreeSet<>();
    for (ObjectNode r : results) {
      long id = r.get("id").asLong();
      long start = r.get("window_start").asLong();
      assertEquals("row " + id + " window", (id / WINDOW_SECONDS) * WINDOW_SECONDS * 1000, start);
      windows.add(start);
    }
    assertEquals(STREAM_ROWS / WINDOW_SECONDS, windows.size());
    assertTrue(windows.contains(0L));
  }
}
