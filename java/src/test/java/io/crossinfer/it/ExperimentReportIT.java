package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.crossinfer.ABTest;
import io.crossinfer.ExperimentReport;
import io.crossinfer.Format;
import io.crossinfer.InferenceResult;
import io.crossinfer.Model;
import io.crossinfer.SklearnMethod;
import io.crossinfer.TestResults;
import io.crossinfer.examples.DigitsData;
import io.crossinfer.examples.JsonLinesSink;
import io.crossinfer.launch.ExpansionServiceLauncher;
import io.crossinfer.launch.PythonJobServer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.SerializableFunction;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.joda.time.Duration;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * The experiment report from Java: {@code ExperimentReport.of(abResult)} through the expansion
 * service on Beam's Python job server, for a hash-split A/B test and a mirror, equals the report
 * Python computes ({@code crossinfer report}) from the same result rows, field by field - every
 * field of Python's rows, latency percentiles included: the "timed" report reads the A/B results
 * with the optional timing fields {@code model_ms} and {@code batch_size} added (made up from
 * the id, as the engine does not write them yet).
 */
public class ExperimentReportIT {
  private static final int ROWS = 300;
  private static final ObjectMapper MAPPER = new ObjectMapper();

  private static ExpansionServiceLauncher service;
  private static PythonJobServer jobServer;
  private static Path out;
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
            .logFile(logs.resolve("report-expansion-service.log"))
            .start();
    jobServer =
        PythonJobServer.start(
            python, logs.resolve("report-job-server.log"), java.time.Duration.ofMinutes(2));
    out = E2e.freshDir("report");
    List<Row> rows = new ArrayList<>(E2e.digits(ROWS));
    // Rows a model rejects (63 features: they fail in their arm) and malformed input (NaN:
    // fails before any arm), so failures per arm are part of the comparison.
    List<Double> short63 = new ArrayList<>(Collections.nCopies(63, 1.0));
    List<Double> nan = new ArrayList<>(Collections.nCopies(64, 1.0));
    nan.set(0, Double.NaN);
    for (int i = 0; i < 6; i++) {
      rows.add(DigitsData.row(9000 + i, "bad-" + i, i, short63));
    }
    rows.add(DigitsData.row(9100, "nan", 0, nan));

    ABTest regression = regression(models);
    Map<String, ABTest> experiments =
        Map.of(
            "regression", regression,
            "ab", E2e.abTest(),
            "mirror",
                ABTest.of(
                        "shadow",
                        ABTest.Arm.of("current", E2e.lr()),
                        ABTest.Arm.of("candidate", E2e.mlp()))
                    .withMirror());
    Pipeline p = Pipeline.create(jobServer.pipelineOptions());
    PCollection<Row> input = p.apply("Digits", Create.of(rows).withRowSchema(DigitsData.SCHEMA));
    Map<String, InferenceResult> results = new TreeMap<>();
    for (Map.Entry<String, ABTest> e : experiments.entrySet()) {
      String name = e.getKey();
      Files.writeString(out.resolve(name + ".json"), e.getValue().toSpecJson());
      InferenceResult result =
          input.apply(name, e.getValue().withExpansionService(service.address()));
      results.put(name, result);
      result.output().apply("Write " + name, JsonLinesSink.to(out.resolve(name + "-results")));
      result.failures()
          .apply("Write " + name + " failures", JsonLinesSink.to(out.resolve(name + "-failures")));
      // The regression report is built from the ABTest (not its result) and sets every option.
      ExperimentReport settings =
          name.equals("regression")
              ? ExperimentReport.of(regression)
                  .withExpansionService(service.address())
                  .withGroundTruth("digit")
                  .withMetric(ExperimentReport.Metric.MEAN_ABS_ERROR)
                  .withControl("strong")
                  .withConfidence(0.9)
              : ExperimentReport.of(result).withGroundTruth("digit").withIdField("id");
      ExperimentReport.Output report = result.apply("Report " + name, settings);
      report.arms().apply("Write " + name + " arms", JsonLinesSink.to(out.resolve(name + "-arms")));
      report.pairs()
          .apply("Write " + name + " pairs", JsonLinesSink.to(out.resolve(name + "-pairs")));
    }
    addSticky(p, rows);
    InferenceResult ab = results.get("ab");
    Schema timedSchema =
        Schema.builder()
            .addFields(ab.output().getSchema().getFields())
            .addNullableField("model_ms", Schema.FieldType.array(Schema.FieldType.DOUBLE))
            .addNullableField("batch_size", Schema.FieldType.array(Schema.FieldType.INT64))
            .build();
    PCollection<Row> timedRows =
        ab.output()
            .apply(
                "Add timing",
                MapElements.into(TypeDescriptors.rows()).via(withTiming(timedSchema)))
            .setRowSchema(timedSchema);
    InferenceResult timed =
        TestResults.of(timedRows, ab.failures(), ab.specJson(), ab.expansionService());
    Files.writeString(out.resolve("timed.json"), ab.specJson());
    timedRows.apply("Write timed", JsonLinesSink.to(out.resolve("timed-results")));
    ab.failures().apply("Write timed failures", JsonLinesSink.to(out.resolve("timed-failures")));
    ExperimentReport.Output timedReport =
        timed.apply("Report timed", ExperimentReport.of(timed).withGroundTruth("digit"));
    timedReport.arms().apply("Write timed arms", JsonLinesSink.to(out.resolve("timed-arms")));
    timedReport.pairs()
        .apply("Write timed pairs", JsonLinesSink.to(out.resolve("timed-pairs")));
    state = p.run().waitUntilFinish(Duration.standardMinutes(5));
  }

  /**
   * A hash split sticky on a key field named {@code user} with 8 values (8 units of assignment
   * for the 300-odd elements), reported with {@code withKeyField("user")}: its SRM test counts
   * distinct keys per arm.
   */
  private static void addSticky(Pipeline p, List<Row> rows) throws Exception {
    Schema schema =
        Schema.builder()
            .addInt64Field("id")
            .addStringField("user")
            .addInt64Field("digit")
            .addArrayField("features", Schema.FieldType.DOUBLE)
            .build();
    List<Row> sticky = new ArrayList<>();
    for (Row r : rows) {
      long id = r.getInt64("id");
      sticky.add(
          Row.withSchema(schema)
              .addValues(id, "user-" + (id % 8), r.getInt64("digit"),
                  new ArrayList<>(r.<Double>getArray("features")))
              .build());
    }
    ABTest ab =
        ABTest.of(
                "sticky",
                ABTest.Arm.of("control", 50, E2e.lr()),
                ABTest.Arm.of("treatment", 50, E2e.mlp()))
            .withHashSplit("sticky-2026")
            .withKeyField("user");
    Files.writeString(out.resolve("sticky.json"), ab.toSpecJson());
    InferenceResult result =
        p.apply("Sticky digits", Create.of(sticky).withRowSchema(schema))
            .apply("sticky", ab.withExpansionService(service.address()));
    result.output().apply("Write sticky", JsonLinesSink.to(out.resolve("sticky-results")));
    result.failures()
        .apply("Write sticky failures", JsonLinesSink.to(out.resolve("sticky-failures")));
    ExperimentReport.Output report =
        result.apply(
            "Report sticky",
            ExperimentReport.of(result).withGroundTruth("digit").withKeyField("user"));
    report.arms().apply("Write sticky arms", JsonLinesSink.to(out.resolve("sticky-arms")));
    report.pairs().apply("Write sticky pairs", JsonLinesSink.to(out.resolve("sticky-pairs")));
  }

  /**
   * A result row with {@code model_ms} (one model stage; 0.05 to 1.3 ms from the id, twice that
   * in the treatment arm) and {@code batch_size} (1 to 32), every fifth row without them (an
   * engine that did not time that batch): the spread the latency quantiles summarise.
   */
  static SerializableFunction<Row, Row> withTiming(Schema schema) {
    return row -> {
      long id = row.getInt64("id");
      boolean timedRow = id % 5 != 0;
      double ms = (0.05 + (id % 97) * 0.013)
          * (row.getString(InferenceResult.PATH).contains("/treatment/") ? 2 : 1);
      return Row.withSchema(schema)
          .addValues(row.getValues())
          .addValue(timedRow ? List.of(ms) : null)
          .addValue(timedRow ? List.of(1 + id % 32) : null)
          .build();
    };
  }

  /**
   * Two ridge regressions of the digit's value on its pixels (a strong and an over-regularised
   * one), trained by the test's Python into the models directory, split at random 50/50.
   */
  static ABTest regression(Path models) throws Exception {
    String script =
        "import skops.io, sys\n"
            + "from sklearn.datasets import load_digits\n"
            + "from sklearn.linear_model import Ridge\n"
            + "d = load_digits()\n"
            + "for name, alpha in (('strong', 1.0), ('weak', 1e5)):\n"
            + "    m = Ridge(alpha=alpha).fit(d.data, d.target.astype(float))\n"
            + "    skops.io.dump(m, sys.argv[1] + '/digits_ridge_' + name + '.skops')\n";
    Process train =
        new ProcessBuilder(E2e.python().toString(), "-c", script, models.toString())
            .redirectErrorStream(true)
            .start();
    String log = new String(train.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertTrue("training the ridge models failed: " + log, train.waitFor(2, TimeUnit.MINUTES));
    assertEquals("training the ridge models failed: " + log, 0, train.exitValue());
    return ABTest.of(
            "digits_reg",
            ABTest.Arm.of("strong", 50,
                Model.sklearn("ridge_strong", models.resolve("digits_ridge_strong.skops").toString())
                    .withFormat(Format.SKOPS)
                    .withMethod(SklearnMethod.PREDICT)),
            ABTest.Arm.of("weak", 50,
                Model.sklearn("ridge_weak", models.resolve("digits_ridge_weak.skops").toString())
                    .withFormat(Format.SKOPS)
                    .withMethod(SklearnMethod.PREDICT)))
        .withRandomSplit(11);
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

  /** The report Python computes from the result files: rows by kind ("arm", "pair"). */
  private static Map<String, List<JsonNode>> pythonReport(String name, String... flags)
      throws Exception {
    Path json = out.resolve(name + "-python.jsonl");
    List<String> command =
        new ArrayList<>(
            List.of(
                E2e.python().toString(), "-m", "crossinfer.experiments.cli", "report",
                out.resolve(name + "-results").toString(),
                "--failures", out.resolve(name + "-failures").toString(),
                "--spec", out.resolve(name + ".json").toString(),
                "--ground-truth", "digit", "--id-field", "id", "--json", json.toString()));
    command.addAll(List.of(flags));
    Process process =
        new ProcessBuilder(command)
            .redirectErrorStream(true)
            .redirectOutput(out.resolve(name + "-python.log").toFile())
            .start();
    if (!process.waitFor(5, TimeUnit.MINUTES)) {
      process.destroyForcibly();
      fail("crossinfer report timed out; see " + out.resolve(name + "-python.log"));
    }
    assertEquals(
        "crossinfer report failed: " + Files.readString(out.resolve(name + "-python.log")),
        0,
        process.exitValue());
    Map<String, List<JsonNode>> byKind = new TreeMap<>();
    for (String line : Files.readAllLines(json, StandardCharsets.UTF_8)) {
      ObjectNode row = (ObjectNode) MAPPER.readTree(line);
      byKind.computeIfAbsent(row.remove("kind").asText(), k -> new ArrayList<>()).add(row);
    }
    return byKind;
  }

  private static void assertSameRows(
      String what, List<? extends JsonNode> expected, List<? extends JsonNode> actual, String key) {
    Map<String, JsonNode> byKey = new TreeMap<>();
    expected.forEach(r -> byKey.put(r.get(key).asText(), r));
    assertEquals(what + ": rows", byKey.size(), actual.size());
    for (JsonNode row : actual) {
      JsonNode want = byKey.get(row.get(key).asText());
      assertNotNull(what + ": unexpected row " + row, want);
      for (Iterator<String> it = want.fieldNames(); it.hasNext(); ) {
        String field = it.next();
        assertSameValue(what + " " + row.get(key).asText() + "." + field, want.get(field),
            row.get(field));
      }
    }
  }

  /**
   * Equal values; doubles to 1e-9 relative: the same float64 values combined in another order
   * (Java and Python runners bundle differently) differ in the last bits of sums.
   */
  private static void assertSameValue(String what, JsonNode want, JsonNode got) {
    assertNotNull(what + " missing", got);
    if (want.isArray()) {
      assertEquals(what + " length", want.size(), got.size());
      for (int i = 0; i < want.size(); i++) {
        assertSameValue(what + "[" + i + "]", want.get(i), got.get(i));
      }
    } else if (want.isFloatingPointNumber() || got.isFloatingPointNumber()) {
      double w = want.asDouble();
      double g = got.asDouble();
      assertTrue(what + ": " + w + " vs " + g, Math.abs(w - g) <= 1e-9 * Math.abs(w) + 1e-12);
    } else {
      assertEquals(what, want, got);
    }
  }

  private static void assertJavaEqualsPython(String name, String pairKey, String... flags)
      throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    Map<String, List<JsonNode>> python = pythonReport(name, flags);
    List<ObjectNode> arms = JsonLinesSink.read(out.resolve(name + "-arms"));
    List<ObjectNode> pairs = JsonLinesSink.read(out.resolve(name + "-pairs"));
    assertSameRows(name + " arms", python.get("arm"), arms, "arm");
    assertSameRows(name + " pairs", python.get("pair"), pairs, pairKey);
  }

  @Test
  public void abReportFromJavaEqualsPython() throws Exception {
    assertJavaEqualsPython("ab", "treatment");
    List<ObjectNode> arms = JsonLinesSink.read(out.resolve("ab-arms"));
    long failures = arms.stream().mapToLong(a -> a.get("failures").asLong()).sum();
    assertEquals("the 63-feature rows fail in their arms", 6, failures);
    assertEquals(1, arms.get(0).get("unrouted_failures").asLong());
    assertTrue(arms.get(0).get("srm_p_value").isNumber());
    ObjectNode pair = JsonLinesSink.read(out.resolve("ab-pairs")).get(0);
    assertEquals("two-proportion (Agresti-Caffo)", pair.get("test").asText());
  }

  /**
   * scipy.stats.chisquare([k, 8 - k]).pvalue for k = 0..4 (8 keys, 50/50): the only SRM p-values
   * 8 distinct keys can give; counted by element the test would see some 300 units.
   */
  private static final double[] EIGHT_KEY_SRM_P = {
    0.004677734981047276, 0.033894853524689295, 0.15729920705028105, 0.47950012218695337, 1.0
  };

  @Test
  public void hashSplitSrmOnDistinctKeysFromJavaEqualsPython() throws Exception {
    assertJavaEqualsPython("sticky", "treatment", "--key-field", "user");
    java.util.Set<String> control = new java.util.TreeSet<>();
    java.util.Set<String> all = new java.util.TreeSet<>();
    for (ObjectNode r : JsonLinesSink.read(out.resolve("sticky-results"))) {
      all.add(r.get("user").asText());
      if (r.get("path").asText().startsWith("sticky/control/")) {
        control.add(r.get("user").asText());
      }
    }
    assertEquals("8 keys, each in one arm", 8, all.size());
    int k = Math.min(control.size(), 8 - control.size());
    for (ObjectNode arm : JsonLinesSink.read(out.resolve("sticky-arms"))) {
      assertEquals(
          arm.toString(), EIGHT_KEY_SRM_P[k], arm.get("srm_p_value").asDouble(), 1e-12);
    }
  }

  @Test
  public void latencyPercentilesFromJavaEqualPython() throws Exception {
    assertJavaEqualsPython("timed", "treatment");
    for (ObjectNode arm : JsonLinesSink.read(out.resolve("timed-arms"))) {
      String name = arm.get("arm").asText();
      // the timed rows of the arm: 4 in 5 (ids divisible by 5 carry no timing)
      long count = arm.get("count").asLong();
      assertTrue(name + ": latency_count " + arm, arm.get("latency_count").asLong() > count / 2);
      assertTrue(name, arm.get("latency_count").asLong() < count);
      double p50 = arm.get("latency_p50_ms").asDouble();
      double p99 = arm.get("latency_p99_ms").asDouble();
      assertTrue(name + ": " + arm, p50 > 0.05 && p50 < p99 && p99 < 2 * 1.4);
      assertEquals(1, arm.get("stages").size());
      assertEquals(p50, arm.get("stage_p50_ms").get(0).asDouble(), 1e-12);
      double batch = arm.get("stage_batch_size_mean").get(0).asDouble();
      assertTrue(name + ": batch size mean " + batch, batch > 1 && batch < 32);
      assertTrue(arm.get("stage_batch_size_max").get(0).asLong() <= 32);
    }
  }

  @Test
  public void regressionReportWithEveryOptionEqualsPython() throws Exception {
    assertJavaEqualsPython(
        "regression", "treatment", "--metric", "mean_abs_error", "--control", "strong",
        "--confidence", "0.9");
    ObjectNode pair = JsonLinesSink.read(out.resolve("regression-pairs")).get(0);
    assertEquals("strong", pair.get("control").asText());
    assertEquals("weak", pair.get("treatment").asText());
    assertEquals("Welch t", pair.get("test").asText());
    assertEquals(0.9, pair.get("confidence").asDouble(), 0.0);
    assertTrue("the over-regularised model errs more", pair.get("difference").asDouble() > 0);
    for (ObjectNode arm : JsonLinesSink.read(out.resolve("regression-arms"))) {
      assertEquals("mean_abs_error", arm.get("metric").asText());
      assertTrue(arm.get("metric_count").asLong() > 0);
    }
  }

  @Test
  public void mirrorReportFromJavaEqualsPython() throws Exception {
    assertJavaEqualsPython("mirror", "treatment");
    ObjectNode pair = JsonLinesSink.read(out.resolve("mirror-pairs")).get(0);
    assertEquals("candidate", pair.get("treatment").asText());
    assertEquals(ROWS, pair.get("pairs").asLong());
    assertTrue(pair.get("agreement").asDouble() > 0.5);
    assertEquals("McNemar exact (paired)", pair.get("test").asText());
  }
}
