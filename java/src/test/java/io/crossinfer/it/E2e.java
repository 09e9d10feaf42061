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
    return Model.sklearn("digits_lr", model("digits_lr.pkl"))
        .withMethod(SklearnMethod.PREDICT_PROBA)
        .withPreprocess(Op.scale(1.0 / 16))
        .withPostprocess(Op.argmax())
        .withSha256(sha256(model("digits_lr.pkl")));
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
        Model.sklearn("digits_pca", model("digits_pca.pkl"))
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
    return python(runs, "python-direct");
  }

  /**
   * Runs {@code python_direct.py} over {@code runs} with {@code args} after its two file
   * arguments (e.g. {@code --job-endpoint E}: on a job server instead of in process).
   */
  static JsonNode python(Map<String, Run> runs, String what, String... args)
      throws IOException, InterruptedException {
    Path dir = freshDir(what);
    Path script = dir.resolve("python_direct.py");
    try (InputStream in = E2e.class.getResourceAsStream("python_direct.py")) {
      Files.copy(in, script);
    }
    ObjectNode job = MAPPER.createObjectNode();
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

  /** Result rows as sorted lines {@code id path label score}, comparable across languages. */
  static List<String> resultLines(Iterable<? extends JsonNode> results) {
    Map<String, String> byKey = new TreeMap<>();
    for (JsonNode r : results) {
      String key = String.format("%05d %s", r.get("id").asLong(), r.get("path").asText());
      String line =
          key
              + " model="
              + r.get("model").asText()
              + " label="
              + r.get("label")
              + " score="
              + String.format("%.5f", r.get("score").asDouble());
      assertTrue("duplicate result " + key, byKey.put(key, line) == null);
    }
    return new ArrayList<>(byKey.values());
  }

  /**
   * Asserts two sorted lists of {@link #resultLines} are equal, reporting the count and the first
   * differences rather than both lists.
   */
  static void assertSameLines(String what, List<String> expected, List<String> actual) {
    if (expected.equals(actual)) {
      return;
    }
    List<String> missing = new ArrayList<>(expected);
    missing.removeAll(actual);
    List<String> extra = new ArrayList<>(actual);
    extra.removeAll(expected);
    fail(
        what
            + ": expected "
            + expected.size()
            + " rows, got "
            + actual.size()
            + "; missing (first 5): "
            + missing.subList(0, Math.min(5, missing.size()))
            + "; unexpected (first 5): "
            + extra.subList(0, Math.min(5, extra.size())));
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
