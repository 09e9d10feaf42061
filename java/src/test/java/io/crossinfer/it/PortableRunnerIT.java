package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.crossinfer.InferenceResult;
import io.crossinfer.PackedFeatures;
import io.crossinfer.Transport;
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
import org.apache.beam.sdk.schemas.Schema;
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

    Pipeline p = Pipeline.create(jobServer.pipelineOptions());
    PCollection<Row> input = p.apply("Digits", Create.of(rows).withRowSchema(DigitsData.SCHEMA));
    write(input.apply("A/B", E2e.abTest().withExpansionService(address)), "ab");
    write(input.apply("Sequence", E2e.sequence().withExpansionService(address)), "sequence");
    write(
        p.apply("Keyed digits", Create.of(keyedRows(rows)).withRowSchema(DigitsData.SCHEMA))
            // Four shards per route (the default here is 1: three models, a bound of 2): the
            // results must equal Python-direct's, which runs the spec without shards.
            .apply("Keyed", E2e.keyed().withShards(4).withExpansionService(address)),
        "keyed");
    Schema renamed =
        Schema.builder()
            .addInt64Field("id")
            .addStringField("user")
            .addInt64Field("digit")
            .addArrayField("pixels", Schema.FieldType.FLOAT)
            .build();
    List<Row> renamedRows =
        rows.stream()
            .map(
                r ->
                    Row.withSchema(renamed)
                        .addValues(
                            r.getInt64("id"),
                            r.getString("key"),
                            r.getInt64("digit"),
                            r.getArray("features").stream()
                                .map(x -> ((Double) x).floatValue())
                                .toList())
                        .build())
            .toList();
    write(
        p.apply("Renamed digits", Create.of(renamedRows).withRowSchema(renamed))
            .apply(
                "A/B on renamed fields",
                E2e.abTest()
                    .withFeaturesField("pixels")
                    .withKeyField("user")
                    .withExpansionService(address)),
        "renamed");
    write(
        p.apply("Packed digits", Create.of(packedRows(rows)).withRowSchema(PACKED))
            .apply("Sequence on packed features", E2e.sequence().withExpansionService(address)),
        "packed");
    write(
        p.apply("Bad digits", Create.of(badRows()).withRowSchema(DigitsData.SCHEMA))
            .apply("Keyed on bad input", E2e.keyed().withExpansionService(address)),
        "bad");
    // The same bad and packed input, one row per element (the default sends bounded input in
    // batches): both transports must give the same rows.
    write(
        p.apply("Bad digits, by row", Create.of(badRows()).withRowSchema(DigitsData.SCHEMA))
            .apply(
                "Keyed on bad input, by row",
                E2e.keyed().withTransport(Transport.ROWS).withExpansionService(address)),
        "bad-rows");
    write(
        p.apply("Packed digits, by row", Create.of(packedRows(rows)).withRowSchema(PACKED))
            .apply(
                "Sequence on packed features, by row",
                E2e.sequence().withTransport(Transport.ROWS).withExpansionService(address)),
        "packed-rows");
    // The A/B with timing, on both transports: the same rows plus model_ms and batch_size.
    write(input.apply("A/B timed", E2e.abTest().withTiming().withExpansionService(address)),
        "ab-timed");
    write(
        input.apply(
            "A/B timed, by row",
            E2e.abTest().withTiming().withTransport(Transport.ROWS).withExpansionService(address)),
        "ab-timed-rows");
    state = p.run().waitUntilFinish(Duration.standardMinutes(4));
  }

  /** The digits with their features as packed float32 bytes (see {@link PackedFeatures}). */
  static final Schema PACKED =
      Schema.builder()
          .addInt64Field("id")
          .addStringField("key")
          .addInt64Field("digit")
          .addField(PackedFeatures.field("features"))
          .build();

  /** The rows with packed features, plus one row whose bytes are not whole float32 values. */
  static List<Row> packedRows(List<Row> rows) {
    List<Row> packed = new java.util.ArrayList<>();
    for (Row r : rows) {
      double[] values = r.getArray("features").stream().mapToDouble(x -> (Double) x).toArray();
      packed.add(
          Row.withSchema(PACKED)
              .addValues(r.getInt64("id"), r.getString("key"), r.getInt64("digit"),
                  PackedFeatures.pack(values))
              .build());
    }
    packed.add(Row.withSchema(PACKED).addValues(9100L, "k", 0L, new byte[10]).build());
    return packed;
  }

  /** One row of each class of bad input, and one good row. */
  static List<Row> badRows() {
    List<Double> good = new java.util.ArrayList<>(java.util.Collections.nCopies(64, 3.0));
    List<Double> nan = new java.util.ArrayList<>(good);
    nan.set(5, Double.NaN);
    return List.of(
        DigitsData.row(9001, "sklearn", 1, nan),
        DigitsData.row(9002, "sklearn", 2, List.of()),
        DigitsData.row(9003, "sklearn", 3, good.subList(0, 63)),
        DigitsData.row(9004, "no-such-route", 4, good),
        DigitsData.row(9005, "sklearn", 5, good));
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
    assertEquals(name + ": Python-direct rows", 150, expected.get(name).get("results").size());
    E2e.assertSameResults(name + " (Java vs Python-direct)",
        expected.get(name).get("results")::elements, javaResults);
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

  private static ObjectNode failureOf(long id) throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    List<ObjectNode> failures = JsonLinesSink.read(out.resolve("bad-failures"));
    List<ObjectNode> matching =
        failures.stream().filter(f -> f.get("element").get("id").asLong() == id).toList();
    assertEquals("failures of row " + id + " in " + failures, 1, matching.size());
    ObjectNode failure = matching.get(0);
    // The failure carries the input row untouched.
    assertEquals(id % 10, failure.get("element").get("digit").asLong());
    return failure;
  }

  @Test
  public void nanFeaturesComeBackAsAnInputFailure() throws Exception {
    ObjectNode f = failureOf(9001);
    assertEquals("input", f.get("node").asText());
    assertTrue(f.toString(), f.get("error").asText().contains("NaN or infinity (first at index 5)"));
  }

  @Test
  public void emptyFeaturesComeBackAsAnInputFailure() throws Exception {
    ObjectNode f = failureOf(9002);
    assertEquals("input", f.get("node").asText());
    assertTrue(f.toString(), f.get("error").asText().contains("'features' is empty"));
  }

  @Test
  public void wrongLengthFeaturesComeBackAsAModelFailure() throws Exception {
    ObjectNode f = failureOf(9003);
    assertEquals("digits_keyed/digits_lr", f.get("node").asText());
    assertTrue(f.toString(), f.get("error").asText().contains("X has 63 features"));
    assertEquals(63, f.get("element").get("features").size());
  }

  @Test
  public void unknownKeyWithoutDefaultRouteComesBackAsAFailure() throws Exception {
    ObjectNode f = failureOf(9004);
    assertEquals("digits_keyed", f.get("node").asText());
    assertTrue(f.toString(), f.get("error").asText().contains("no route for key 'no-such-route'"));
  }

  @Test
  public void everyBadInputElementIsAccountedFor() throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    List<ObjectNode> results = JsonLinesSink.read(out.resolve("bad"));
    List<ObjectNode> failures = JsonLinesSink.read(out.resolve("bad-failures"));
    assertEquals(4, failures.size());
    assertEquals(1, results.size());
    assertEquals(9005, results.get(0).get("id").asLong());
    assertEquals("digits_lr", results.get(0).get("model").asText());
  }

  @Test
  public void featuresAndKeyFieldsCanBeRenamedAndFloat() throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    List<ObjectNode> renamed = JsonLinesSink.read(out.resolve("renamed"));
    assertEquals(List.of(), JsonLinesSink.read(out.resolve("renamed-failures")));
    E2e.assertSameResults("A/B on 'pixels' (FLOAT) keyed by 'user' vs Python-direct on 'features'",
        expected.get("ab").get("results")::elements, renamed);
    assertTrue(renamed.get(0).has("pixels"));
    assertTrue(renamed.get(0).has("user"));
  }

  @Test
  public void packedFeaturesGiveThePythonDirectResults() throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    E2e.assertSameResults("sequence on packed float32 features vs Python-direct on a DOUBLE array",
        expected.get("sequence").get("results")::elements,
        JsonLinesSink.read(out.resolve("packed")));
    List<ObjectNode> failures = JsonLinesSink.read(out.resolve("packed-failures"));
    assertEquals(failures.toString(), 1, failures.size());
    assertEquals(9100, failures.get(0).get("element").get("id").asLong());
    assertTrue(failures.toString(), failures.get(0).get("error").asText().contains("4 bytes each"));
  }

  @Test
  public void batchAndRowTransportsGiveTheSameRows() throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    for (String name : List.of("bad", "packed")) {
      for (String output : List.of("", "-failures")) {
        List<ObjectNode> batches = sorted(JsonLinesSink.read(out.resolve(name + output)));
        List<ObjectNode> rowByRow =
            sorted(JsonLinesSink.read(out.resolve(name + "-rows" + output)));
        assertTrue(name + output + " is empty", !batches.isEmpty());
        assertEquals(name + output + " rows", rowByRow.size(), batches.size());
        for (int i = 0; i < batches.size(); i++) {
          assertClose(name + output + "[" + i + "]", rowByRow.get(i), batches.get(i));
        }
      }
    }
  }

  /** By id (of the row, or of the failed element) then path. */
  private static List<ObjectNode> sorted(List<ObjectNode> rows) {
    return rows.stream()
        .sorted(
            java.util.Comparator.comparing(
                (ObjectNode r) -> (r.has("element") ? r.get("element") : r).get("id").asLong())
                .thenComparing(r -> r.path("path").asText()))
        .toList();
  }

  /**
   * Equal JSON, numbers within {@link E2e#FLOAT32_TOL} (the two transports batch the model
   * differently, so float32 results differ in their last bits).
   */
  private static void assertClose(String where, JsonNode expected, JsonNode actual) {
    if (expected.isNumber() && actual.isNumber()) {
      double e = expected.asDouble();
      double a = actual.asDouble();
      assertTrue(where + ": " + e + " vs " + a, E2e.close(e, a));
      return;
    }
    assertEquals(where + " kind", expected.getNodeType(), actual.getNodeType());
    assertEquals(where + " size", expected.size(), actual.size());
    if (expected.isObject()) {
      List<String> fields = new java.util.ArrayList<>();
      expected.fieldNames().forEachRemaining(fields::add);
      List<String> actualFields = new java.util.ArrayList<>();
      actual.fieldNames().forEachRemaining(actualFields::add);
      assertEquals(where + " fields", fields, actualFields);
      expected.fieldNames().forEachRemaining(
          f -> assertClose(where + "." + f, expected.get(f), actual.get(f)));
    } else if (expected.isArray()) {
      for (int i = 0; i < expected.size(); i++) {
        assertClose(where + "[" + i + "]", expected.get(i), actual.get(i));
      }
    } else {
      assertEquals(where, expected, actual);
    }
  }

  @Test
  public void withTimingGivesEachRowItsModelTimeAndBatchOnBothTransports() throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    List<ObjectNode> untimed = sorted(JsonLinesSink.read(out.resolve("ab")));
    assertTrue(!untimed.get(0).has("model_ms") && !untimed.get(0).has("batch_size"));
    for (String name : List.of("ab-timed", "ab-timed-rows")) {
      assertEquals(name, List.of(), JsonLinesSink.read(out.resolve(name + "-failures")));
      List<ObjectNode> timed = sorted(JsonLinesSink.read(out.resolve(name)));
      assertEquals(name, ROWS, timed.size());
      for (int i = 0; i < ROWS; i++) {
        ObjectNode row = timed.get(i);
        String where = name + "[" + i + "]: " + row;
        // Each arm is one model: one entry each, a positive time, a batch of 1..its bound.
        assertEquals(where, 1, row.get("model_ms").size());
        assertEquals(where, 1, row.get("batch_size").size());
        assertTrue(where, row.get("model_ms").get(0).asDouble() > 0);
        long size = row.get("batch_size").get(0).asLong();
        assertTrue(where, size >= 1 && size <= ROWS);
        // Otherwise the row the untimed A/B gives.
        ObjectNode same = row.deepCopy();
        same.remove(List.of("model_ms", "batch_size"));
        assertClose(where, untimed.get(i), same);
      }
    }
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
