package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;
import static org.junit.Assume.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.crossinfer.ABTest;
import io.crossinfer.Format;
import io.crossinfer.Keyed;
import io.crossinfer.Model;
import io.crossinfer.Op;
import io.crossinfer.Sequence;
import io.crossinfer.SklearnMethod;
import io.crossinfer.examples.DigitsData;
import io.crossinfer.launch.Python;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.apache.beam.runners.portability.PortableRunner;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.values.Row;

/** Shared set-up of the end-to-end tests: Python, demo models, digits rows, expected results. */
final class E2e {
  static final ObjectMapper MAPPER = new ObjectMapper();

  private static Path python;
  private static Path models;
  private static Path digitsCsv;

  private E2e() {}

  /** {@code java/target/e2e}. */
  static Path workDir() throws IOException {
    Path dir = Paths.get("target", "e2e").toAbsolutePath();
    Files.createDirectories(dir);
    return dir;
  }

  /** A fresh directory under {@link #workDir()}. */
  static Path freshDir(String name) throws IOException {
    Path dir = Files.createTempDirectory(workDir(), name + "-");
    return dir;
  }

  /**
   * The Python interpreter with crossinfer; the tests are skipped (with the reason) only when
   * there is none.
   */
  static synchronized Path python() throws IOException, InterruptedException {
    if (python == null) {
      Path py = Python.resolve();
      Process check =
          new ProcessBuilder(py.toString(), "-c", "import crossinfer.expansion.service")
              .redirectErrorStream(true)
              .start();
      String out = new String(check.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      check.waitFor(2, TimeUnit.MINUTES);
      assumeTrue(
          "SKIPPED: the end-to-end tests need a Python with crossinfer installed ("
              + py
              + " could not import crossinfer.expansion.service: "
              + out.strip()
              + "); create ../.venv or set $CROSSINFER_PYTHON",
          check.exitValue() == 0);
      python = py;
    }
    return python;
  }

  /** The demo models, trained once into {@code target/e2e/models}. */
  static synchronized Path models() throws IOException, InterruptedException {
    if (models == null) {
      models = DigitsData.prepareModels(python(), workDir().resolve("models"));
    }
    return models;
  }

  /** The first {@code n} digits as input rows. */
  static synchronized List<Row> digits(int n) throws IOException, InterruptedException {
    if (digitsCsv == null) {
      digitsCsv = DigitsData.sklearnDigitsCsv(python());
    }
    return DigitsData.load(digitsCsv, n);
  }

  static String model(String file) throws IOException, InterruptedException {
    return models().resolve(file).toString();
  }

  static String sha256(String path) throws IOException {
    try {
      return HexFormat.of()
          .formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(Paths.get(path))));
    } catch (NoSuchAlgorithmException e) {
      throw new AssertionError(e);
    }
  }

  // ------------------------------------------------------------- the demo specs, in Java

  static Model lr() throws IOException, InterruptedException {
    return Model.sklearn("digits_lr", model("digits_lr.skops"))
        .withFormat(Format.SKOPS)
        .withMethod(SklearnMethod.PREDICT_PROBA)
        .withPreprocess(Op.scale(1.0 / 16))
        .withPostprocess(Op.argmax())
        .withSha256(sha256(model("digits_lr.skops")));
  }

  static Model mlp() throws IOException, InterruptedException {
    return Model.pytorch("digits_mlp", model("digits_mlp.pt"))
        .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(64, 64, 10)))
        .withPreprocess(Op.scale(1.0 / 16))
        .withPostprocess(Op.softmax(), Op.argmax());
  }

  static Model onnx() throws IOException, InterruptedException {
    return Model.onnx("digits_onnx", model("digits_mlp.onnx"))
        .withPreprocess(Op.scale(1.0 / 16))
        .withPostprocess(Op.softmax(), Op.argmax());
  }

  static Sequence sequence() throws IOException, InterruptedException {
    return Sequence.of(
        "digits_seq",
        Model.sklearn("digits_pca", model("digits_pca.skops"))
            .withFormat(Format.SKOPS)
            .withMethod(SklearnMethod.TRANSFORM)
            .withPreprocess(Op.scale(1.0 / 16)),
        Model.pytorch("digits_pca_mlp", model("digits_pca_mlp.pt"))
            .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(16, 32, 10)))
            .withPostprocess(Op.softmax(), Op.argmax()));
  }

  static ABTest abTest() throws IOException, InterruptedException {
    return ABTest.of(
            "digits_ab", ABTest.Arm.of("control", 90, lr()), ABTest.Arm.of("treatment", 10, mlp()))
        .withHashSplit("digits-2026");
  }

  static Keyed keyed() throws IOException, InterruptedException {
    return Keyed.of("digits_keyed", Keyed.Route.of(lr(), "sklearn"))
        .withRoute(mlp(), "torch", "pytorch")
        .withRoute(onnx(), "onnx")
        .withMaxModelsPerWorker(2);
  }

  // ------------------------------------------------------------- Python-direct reference

  /** One Python-direct run: a spec document and the rows it reads. */
  record Run(String specJson, List<Row> rows) {}

  /**
   * Runs every spec with crossinfer's Python transform over its rows and returns, per run name,
   * {@code {"results": [...], "failures": [...]}}.
   */
  static JsonNode pythonDirect(Map<String, Run> runs)
      throws IOException, InterruptedException {
    return python(runs, List.of(), "python-direct");
  }

  /** Like {@link #pythonDirect(Map)}, allowing these classes (import path globs) too. */
  static JsonNode pythonDirect(Map<String, Run> runs, List<String> allowedClasses)
      throws IOException, InterruptedException {
    return python(runs, allowedClasses, "python-direct");
  }

  /**
   * Runs {@code python_direct.py} over {@code runs} (allowing {@code allowedClasses}, import
   * path globs, besides crossinfer's own) with {@code args} after its two file arguments (e.g.
   * {@code --job-endpoint E}: on a job server instead of in process).
   */
  static JsonNode python(
      Map<String, Run> runs, List<String> allowedClasses, String what, String... args)
      throws IOException, InterruptedException {
    Path dir = freshDir(what);
    Path script = dir.resolve("python_direct.py");
    try (InputStream in = E2e.class.getResourceAsStream("python_direct.py")) {
      Files.copy(in, script);
    }
    ObjectNode job = MAPPER.createObjectNode();
    ArrayNode allowed = job.putArray("allowed_classes");
    allowedClasses.forEach(allowed::add);
    ObjectNode runsJson = job.putObject("runs");
    for (Map.Entry<String, Run> e : runs.entrySet()) {
      ObjectNode run = runsJson.putObject(e.getKey());
      run.set("spec", MAPPER.readTree(e.getValue().specJson()));
      ArrayNode rowsJson = run.putArray("rows");
      for (Row row : e.getValue().rows()) {
        rowsJson.add(io.crossinfer.examples.JsonLinesSink.toJson(MAPPER, row));
      }
    }
    Path jobFile = dir.resolve("job.json");
    Path outFile = dir.resolve("expected.json");
    MAPPER.writeValue(jobFile.toFile(), job);
    List<String> command =
        new ArrayList<>(
            List.of(python().toString(), script.toString(), jobFile.toString(),
                outFile.toString()));
    command.addAll(List.of(args));
    Process process =
        new ProcessBuilder(command)
            .redirectErrorStream(true)
            .redirectOutput(dir.resolve("python.log").toFile())
            .start();
    if (!process.waitFor(5, TimeUnit.MINUTES)) {
      process.destroyForcibly();
      fail("the " + what + " run timed out; see " + dir.resolve("python.log"));
    }
    assertEquals(
        "the " + what + " run failed: "
            + Files.readString(dir.resolve("python.log")),
        0,
        process.exitValue());
    return MAPPER.readTree(outFile.toFile());
  }

  /**
   * How far apart two float32 results of the digits models (or a sequence of them) may be when
   * computed in other batch compositions, processes or CPUs: {@code float_tolerance(float32,
   * terms=64, layers=3)} of {@code tests/support.py}, which says where the bound comes from
   * (eps(float32) x the 64-term reductions x 3 layers x the cancellation allowance of 64 that
   * {@code tests/test_tolerances.py} measures). Used as a relative and an absolute bound.
   */
  static final double FLOAT32_TOL = Math.ulp(1.0f) * 64 * 3 * 64;

  /** Whether {@code actual} is within {@link #FLOAT32_TOL} of {@code expected}. */
  static boolean close(double expected, double actual) {
    return Math.abs(expected - actual) <= FLOAT32_TOL * (1 + Math.abs(expected));
  }

  /** Result rows by {@code id path}; a key twice fails the test. */
  private static Map<String, JsonNode> byKey(Iterable<? extends JsonNode> results) {
    Map<String, JsonNode> byKey = new TreeMap<>();
    for (JsonNode r : results) {
      String key = String.format("%05d %s", r.get("id").asLong(), r.get("path").asText());
      assertTrue("duplicate result " + key, byKey.put(key, r) == null);
    }
    return byKey;
  }

  /**
   * Asserts the same results by {@code id} and {@code path}: the same model, scores (and
   * inference values, where both sides have them) within {@link #FLOAT32_TOL}, the same label
   * unless the two labels' probabilities tie within it. Reports the count and the first
   * differences rather than both lists.
   */
  static void assertSameResults(
      String what, Iterable<? extends JsonNode> expected, Iterable<? extends JsonNode> actual) {
    Map<String, JsonNode> want = byKey(expected);
    Map<String, JsonNode> got = byKey(actual);
    List<String> missing = new ArrayList<>(want.keySet());
    missing.removeAll(got.keySet());
    List<String> extra = new ArrayList<>(got.keySet());
    extra.removeAll(want.keySet());
    if (!missing.isEmpty() || !extra.isEmpty()) {
      fail(what + ": expected " + want.size() + " results, got " + got.size()
          + "; missing (first 5): " + missing.subList(0, Math.min(5, missing.size()))
          + "; unexpected (first 5): " + extra.subList(0, Math.min(5, extra.size())));
    }
    for (Map.Entry<String, JsonNode> e : want.entrySet()) {
      String where = what + " " + e.getKey();
      JsonNode w = e.getValue();
      JsonNode g = got.get(e.getKey());
      assertEquals(where + " model", w.get("model").asText(), g.get("model").asText());
      assertTrue(where + " score " + g.get("score") + " vs " + w.get("score"),
          close(w.get("score").asDouble(), g.get("score").asDouble()));
      JsonNode probabilities = w.get("inference");
      if (probabilities != null && g.has("inference")) {
        assertEquals(where + " inference size", probabilities.size(), g.get("inference").size());
        for (int i = 0; i < probabilities.size(); i++) {
          assertTrue(where + " inference[" + i + "]",
              close(probabilities.get(i).asDouble(), g.get("inference").get(i).asDouble()));
        }
      }
      int label = g.get("label").asInt();
      int expectedLabel = w.get("label").asInt();
      if (label != expectedLabel) {
        assertTrue(where + " label " + label + " vs " + expectedLabel + " (no near tie)",
            probabilities != null
                && Math.abs(probabilities.get(label).asDouble()
                        - probabilities.get(expectedLabel).asDouble())
                    <= 2 * FLOAT32_TOL);
      }
    }
  }

  // ------------------------------------------------------------- runners

  /**
   * The prism binary, built with {@code java/scripts/build-prism.sh} (go install from the Go
   * module proxy) when missing; the Prism tests are skipped, with the reason, only when it cannot
   * be built.
   */
  static synchronized Path prism() throws IOException, InterruptedException {
    Path binary = io.crossinfer.launch.PrismJobServer.resolveBinary();
    if (binary != null && Files.isExecutable(binary)) {
      return binary;
    }
    Path script = Paths.get("scripts", "build-prism.sh").toAbsolutePath();
    Process build =
        new ProcessBuilder("bash", script.toString())
            .redirectErrorStream(true)
            .redirectOutput(workDir().resolve("build-prism.log").toFile())
            .start();
    boolean done = build.waitFor(10, TimeUnit.MINUTES);
    if (!done) {
      build.destroyForcibly();
    }
    binary = io.crossinfer.launch.PrismJobServer.resolveBinary();
    assumeTrue(
        "SKIPPED: no prism binary and `"
            + script
            + "` could not build one (needs Go and the Go module proxy); see "
            + workDir().resolve("build-prism.log"),
        done && build.exitValue() == 0 && binary != null && Files.isExecutable(binary));
    return binary;
  }

  /**
   * The Flink job server's and cluster's jars ({@code .tools/flink/lib}), resolved from Maven with
   * {@code java/scripts/build-flink.sh} when missing; the Flink tests are skipped, with the
   * reason, only when they cannot be.
   */
  static synchronized Path flinkLib() throws IOException, InterruptedException {
    Path script = Paths.get("scripts", "build-flink.sh").toAbsolutePath();
    Path log = workDir().resolve("build-flink.log");
    // The script is idempotent (a no-op when the jars of this java/flink are in place).
    Process build =
        new ProcessBuilder("bash", script.toString())
            .redirectErrorStream(true)
            .redirectOutput(log.toFile())
            .start();
    boolean done = build.waitFor(10, TimeUnit.MINUTES);
    if (!done) {
      build.destroyForcibly();
    }
    Path lib = io.crossinfer.launch.FlinkCluster.resolveLib();
    assumeTrue(
        "SKIPPED: no Flink jars and `bash java/scripts/build-flink.sh` could not resolve them"
            + " (Maven Central unreachable?); see " + log,
        done && build.exitValue() == 0 && lib != null && Files.isDirectory(lib));
    return lib;
  }

  /** PortableRunner options for a job server, with the Java side in this JVM (LOOPBACK). */
  static PortablePipelineOptions portableOptions(String jobEndpoint) {
    PortablePipelineOptions options = PipelineOptionsFactory.create().as(PortablePipelineOptions.class);
    options.setRunner(PortableRunner.class);
    options.setJobEndpoint(jobEndpoint);
    options.setDefaultEnvironmentType("LOOPBACK");
    return options;
  }
}
