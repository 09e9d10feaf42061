package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.crossinfer.InferenceResult;
import io.crossinfer.examples.DigitsData;
import io.crossinfer.examples.JsonLinesSink;
import io.crossinfer.launch.ExpansionServiceLauncher;
import io.crossinfer.launch.PythonJobServer;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.joda.time.Duration;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Java pipelines with crossinfer transforms on the PortableRunner against Beam's Python job
 * server: the Java side runs in this JVM (LOOPBACK), the Python side in the expansion service's
 * worker pool. One pipeline runs every pattern; each test checks one output.
 */
public class PortableRunnerIT {
  private static final int ROWS = 150;

  private static ExpansionServiceLauncher service;
  private static PythonJobServer jobServer;
  private static Path out;
  private static JsonNode expected;
  private static PipelineResult.State state;

  @BeforeClass
  public static void runPipeline() throws Exception {
    Path python = E2e.python();
    Path models = E2e.models();
    Path logs = E2e.workDir();
    service =
        ExpansionServiceLauncher.builder()
            .python(python)
            .modelRoots(models.toString())
            .logFile(logs.resolve("portable-expansion-service.log"))
            .start();
    jobServer =
        PythonJobServer.start(python, logs.resolve("python-job-server.log"),
            java.time.Duration.ofMinutes(2));
    List<Row> rows = E2e.digits(ROWS);
    String address = service.address();
    out = E2e.freshDir("portable");

    expected =
        E2e.pythonDirect(
            Map.of(
                "ab", new E2e.Run(E2e.abTest().toSpecJson(), rows),
                "sequence", new E2e.Run(E2e.sequence().toSpecJson(), rows),
                "keyed", new E2e.Run(E2e.keyed().toSpecJson(), keyedRows(rows))));

    Pipeline p = Pipeline.create(E2e.portableOptions(jobServer.endpoint()));
    PCollection<Row> input = p.apply("Digits", Create.of(rows).withRowSchema(DigitsData.SCHEMA));
    write(input.apply("A/B", E2e.abTest().withExpansionService(address)), "ab");
    write(input.apply("Sequence", E2e.sequence().withExpansionService(address)), "sequence");
    write(
        p.apply("Keyed digits", Create.of(keyedRows(rows)).withRowSchema(DigitsData.SCHEMA))
            .apply("Keyed", E2e.keyed().withExpansionService(address)),
        "keyed");
    state = p.run().waitUntilFinish(Duration.standardMinutes(4));
  }

  /** The rows with keys naming the keyed routes, round-robin. */
  static List<Row> keyedRows(List<Row> rows) {
    String[] keys = {"sklearn", "torch", "onnx", "pytorch"};
    return rows.stream()
        .map(
            r ->
                DigitsData.row(
                    r.getInt64("id"),
                    keys[(int) (r.getInt64("id") % keys.length)],
                    r.getInt64("digit"),
                    r.getArray("features").stream().map(x -> (Double) x).toList()))
        .toList();
  }

  private static void write(InferenceResult result, String name) {
    result.output().apply("Write " + name, JsonLinesSink.to(out.resolve(name)));
    result.failures().apply("Write " + name + " failures",
        JsonLinesSink.to(out.resolve(name + "-failures")));
  }

  @AfterClass
  public static void stop() {
    if (jobServer != null) {
      jobServer.close();
    }
    if (service != null) {
      service.close();
    }
  }

  private static void assertMatchesPythonDirect(String name) throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    List<ObjectNode> javaResults = JsonLinesSink.read(out.resolve(name));
    List<ObjectNode> javaFailures = JsonLinesSink.read(out.resolve(name + "-failures"));
    assertEquals(name + " failures: " + javaFailures, 0, javaFailures.size());
    List<String> pythonLines = E2e.resultLines(expected.get(name).get("results")::elements);
    assertEquals(name + ": Python-direct rows", 150, pythonLines.size());
    E2e.assertSameLines(name + " (Java vs Python-direct)", pythonLines,
        E2e.resultLines(javaResults));
  }

  @Test
  public void abTestResultsEqualPythonDirect() throws Exception {
    assertMatchesPythonDirect("ab");
  }

  @Test
  public void sequenceResultsEqualPythonDirect() throws Exception {
    assertMatchesPythonDirect("sequence");
  }

  @Test
  public void keyedResultsEqualPythonDirect() throws Exception {
    assertMatchesPythonDirect("keyed");
  }

  @Test
  public void abTestSplitsStickyByKeyAndReachesBothArms() throws Exception {
    List<ObjectNode> results = JsonLinesSink.read(out.resolve("ab"));
    assertEquals(ROWS, results.size());
    long treatment =
        results.stream().filter(r -> r.get("path").asText().contains("/treatment/")).count();
    assertTrue("treatment arm got " + treatment + " of " + ROWS, treatment > 0 && treatment < 50);
  }
}
