package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.crossinfer.ABTest;
import io.crossinfer.Device;
import io.crossinfer.Format;
import io.crossinfer.InferenceResult;
import io.crossinfer.Model;
import io.crossinfer.Op;
import io.crossinfer.SklearnMethod;
import io.crossinfer.examples.DigitsData;
import io.crossinfer.examples.JsonLinesSink;
import io.crossinfer.launch.ExpansionServiceLauncher;
import io.crossinfer.launch.PythonJobServer;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
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
 * Every {@code withX} of {@link Model} in a real pipeline: mirrored A/B tests whose arms each
 * use settings of the builder, through the expansion service on Beam's Python job server. Each
 * arm's results and failures must equal those of crossinfer's Python transform on the same
 * (Java-built) spec, and {@link #everyWithMethodOfModelIsUsedHere()} holds the list to the
 * builder: a new {@code withX} without an arm here fails it.
 *
 * <p>The service runs with its defaults for what it loads (no {@code --allow-code-format}), so
 * the models are data formats: skops, state dicts, ONNX. The arms are split into A/B tests of
 * at most {@link #MAX_ARMS} arms, the service's default {@code --max-arms}.
 */
public class ModelSettingsIT {
  private static final int ROWS = 40;
  /** The expansion service's default {@code --max-arms} (and the Python transform's). */
  private static final int MAX_ARMS = 16;
  private static final String BEAM_HANDLER =
      "apache_beam.ml.inference.sklearn_inference:SklearnModelHandlerNumpy";

  /** The {@code withX} methods (and factories) the arms below use. */
  private static final Set<String> USED =
      Set.of("withFormat", "withModelClass", "withStateDict", "withHandlerClass", "withMethod",
          "withDevice", "withDtype", "withInputShape", "withBatching", "withLargeModel",
          "withModelCopies", "withPreprocess", "withPostprocess", "withSha256",
          "withInferenceArgs", "withOutput");

  private static ExpansionServiceLauncher service;
  private static PythonJobServer jobServer;
  private static Path out;
  private static JsonNode expected;
  private static PipelineResult.State state;

  /** The arms, in A/B tests of at most {@link #MAX_ARMS} arms each. */
  static List<ABTest> settings() throws Exception {
    Path models = E2e.models();
    Path zoo = zoo();
    String lr = models.resolve("digits_lr.skops").toString();
    // Beam's own scikit-learn handler (an allow-listed custom handler) reads pickles itself.
    String lrPickle = models.resolve("digits_lr.pkl").toString();
    String onnx = models.resolve("digits_mlp.onnx").toString();
    String mlp = models.resolve("digits_mlp.pt").toString();
    Op scale = Op.scale(1.0 / 16);
    List<ABTest.Arm> arms =
        List.of(
            ABTest.Arm.of("format", Model.sklearn("s_format", lr)
                .withFormat(Format.SKOPS)
                .withMethod(SklearnMethod.PREDICT_PROBA)
                .withPreprocess(scale)),
            ABTest.Arm.of("model_class", Model.pytorch("s_model_class", mlp)
                .withFormat(Format.STATE_DICT)
                .withModelClass("crossinfer.models:MLP", Map.of("sizes", List.of(64, 64, 10)))
                .withPreprocess(scale)),
            ABTest.Arm.of("model_class_defaults", Model.pytorch("s_meanpool",
                    zoo.resolve("meanpool.pt").toString())
                .withFormat(Format.STATE_DICT)
                .withModelClass("crossinfer.models:MeanPoolClassifier")
                .withPreprocess(scale)),
            ABTest.Arm.of("state_dict", Model.pytorch("s_state_dict", mlp)
                .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(64, 64, 10)))
                .withPreprocess(scale)),
            ABTest.Arm.of("handler", Model.custom("s_handler", lrPickle, BEAM_HANDLER, Map.of())
                .withPreprocess(scale)),
            ABTest.Arm.of("handler_params", Model.custom("s_handler_params", lrPickle, BEAM_HANDLER, Map.of())
                // model_uri always comes from the node's uri (the spec refuses it here)
                .withHandlerClass(BEAM_HANDLER, Map.of("max_batch_size", 64))
                .withPreprocess(scale)),
            ABTest.Arm.of("predict", Model.sklearn("s_predict", lr).withFormat(Format.SKOPS)
                .withMethod(SklearnMethod.PREDICT).withPreprocess(scale)),
            ABTest.Arm.of("decision_function", Model.sklearn("s_decision", lr)
                .withFormat(Format.SKOPS)
                .withMethod(SklearnMethod.DECISION_FUNCTION).withPreprocess(scale)),
            ABTest.Arm.of("transform", Model.sklearn("s_transform", models.resolve(
                    "digits_pca.skops").toString())
                .withFormat(Format.SKOPS)
                .withMethod(SklearnMethod.TRANSFORM).withPreprocess(scale)),
            ABTest.Arm.of("auto", Model.onnx("s_auto", onnx).withDevice(Device.AUTO)
                .withPreprocess(scale)),
            ABTest.Arm.of("gpu", stateDict("s_gpu", mlp).withDevice(Device.GPU)
                .withPreprocess(scale)),
            ABTest.Arm.of("dtype", Model.sklearn("s_dtype", lr).withFormat(Format.SKOPS)
                .withDtype("float64")
                .withMethod(SklearnMethod.PREDICT_PROBA).withPreprocess(scale)),
            ABTest.Arm.of("input_shape", Model.sklearn("s_input_shape", lr)
                .withFormat(Format.SKOPS).withInputShape(64)
                .withPreprocess(scale)),
            ABTest.Arm.of("batching", Model.onnx("s_batching", onnx).withBatching(2, 8, 0.5)
                .withPreprocess(scale)),
            ABTest.Arm.of("batching_sizes", stateDict("s_batching_sizes", mlp)
                .withBatching(4, 16).withPreprocess(scale)),
            ABTest.Arm.of("large_model", stateDict("s_large_model", mlp)
                .withLargeModel(true).withPreprocess(scale)),
            ABTest.Arm.of("model_copies", Model.onnx("s_model_copies", onnx)
                .withModelCopies(2).withPreprocess(scale)),
            ABTest.Arm.of("ops", stateDict("s_ops", mlp)
                .withPreprocess(Op.padTruncate(64), scale)
                .withPostprocess(Op.softmax(), Op.topK(3), Op.argmax())),
            ABTest.Arm.of("sha256", Model.onnx("s_sha256", onnx).withSha256(E2e.sha256(onnx))
                .withPreprocess(scale)),
            ABTest.Arm.of("args_and_output_index", Model.sklearn("s_ridge", zoo.resolve(
                    "ridge.skops").toString())
                .withFormat(Format.SKOPS)
                .withInferenceArgs(Map.of("return_std", true))
                .withOutput(1)
                .withPreprocess(scale)),
            ABTest.Arm.of("output_name", Model.onnx("s_probs", zoo.resolve("two_outputs.onnx")
                    .toString())
                .withOutput("probs")
                .withPreprocess(scale)));
    List<ABTest> tests = new ArrayList<>();
    for (int from = 0; from < arms.size(); from += MAX_ARMS) {
      tests.add(ABTest.of("settings" + tests.size(),
          arms.subList(from, Math.min(arms.size(), from + MAX_ARMS))).withMirror());
    }
    return tests;
  }

  /** The digits MLP as a state dict of {@code crossinfer.models:MLP}. */
  private static Model stateDict(String name, String uri) {
    return Model.pytorch(name, uri)
        .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(64, 64, 10)));
  }

  /** The extra models of {@code zoo.py}, made once into {@code target/e2e/zoo}. */
  static synchronized Path zoo() throws Exception {
    Path dir = E2e.workDir().resolve("zoo");
    if (!dir.resolve("meanpool.pt").toFile().exists()
        || !dir.resolve("ridge.skops").toFile().exists()) {
      Path script = E2e.freshDir("zoo-script").resolve("zoo.py");
      try (java.io.InputStream in = ModelSettingsIT.class.getResourceAsStream("zoo.py")) {
        java.nio.file.Files.copy(in, script);
      }
      Process p =
          new ProcessBuilder(E2e.python().toString(), script.toString(),
                  E2e.models().toString(), dir.toString())
              .redirectErrorStream(true)
              .redirectOutput(E2e.workDir().resolve("zoo.log").toFile())
              .start();
      assertTrue("zoo.py timed out", p.waitFor(5, java.util.concurrent.TimeUnit.MINUTES));
      assertEquals("zoo.py failed; see target/e2e/zoo.log", 0, p.exitValue());
    }
    return dir;
  }

  @BeforeClass
  public static void runPipeline() throws Exception {
    Path python = E2e.python();
    Path logs = E2e.workDir();
    List<ABTest> specs = settings();
    service =
        ExpansionServiceLauncher.builder()
            .python(python)
            .modelRoots(E2e.models().toString(), zoo().toString())
            .allowClasses(BEAM_HANDLER)
            .logFile(logs.resolve("settings-expansion-service.log"))
            .start();
    jobServer =
        PythonJobServer.start(python, logs.resolve("settings-job-server.log"),
            java.time.Duration.ofMinutes(2));
    List<Row> rows = E2e.digits(ROWS);
    out = E2e.freshDir("settings");
    Map<String, E2e.Run> runs = new java.util.TreeMap<>();
    for (ABTest spec : specs) {
      runs.put(spec.name(), new E2e.Run(spec.toSpecJson(), rows));
    }
    expected = E2e.pythonDirect(runs, List.of(BEAM_HANDLER));
    Pipeline p = Pipeline.create(jobServer.pipelineOptions());
    PCollection<Row> digits = p.apply("Digits", Create.of(rows).withRowSchema(DigitsData.SCHEMA));
    for (ABTest spec : specs) {
      String name = spec.name();
      InferenceResult result =
          digits.apply("Run " + name, spec.withExpansionService(service.address()));
      result.output().apply("Write results " + name,
          JsonLinesSink.to(out.resolve(name).resolve("results")));
      result.failures().apply("Write failures " + name,
          JsonLinesSink.to(out.resolve(name).resolve("failures")));
    }
    state = p.run().waitUntilFinish(Duration.standardMinutes(5));
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

  @Test
  public void everyArmEqualsPythonDirect() throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    for (ABTest spec : settings()) {
      String name = spec.name();
      List<ObjectNode> results = JsonLinesSink.read(out.resolve(name).resolve("results"));
      E2e.assertSameResults(name + " (Java vs Python-direct)",
          expected.get(name).get("results")::elements, results);
      Set<String> failures = new TreeSet<>();
      for (ObjectNode f : JsonLinesSink.read(out.resolve(name).resolve("failures"))) {
        failures.add(f.get("element").get("id").asLong() + " " + f.get("node").asText() + " "
            + f.get("error").asText());
      }
      Set<String> expectedFailures = new TreeSet<>();
      for (JsonNode f : expected.get(name).get("failures")) {
        expectedFailures.add(f.get("id").asLong() + " " + f.get("node").asText() + " "
            + f.get("error").asText());
      }
      assertEquals(name, expectedFailures, failures);
    }
  }

  @Test
  public void everyElementReachesEveryArm() throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    int arms = 0;
    int results = 0;
    int failures = 0;
    for (ABTest spec : settings()) {
      arms += spec.toSpecJson().split("\"kind\": \"model\"", -1).length - 1;
      results += JsonLinesSink.read(out.resolve(spec.name()).resolve("results")).size();
      failures += JsonLinesSink.read(out.resolve(spec.name()).resolve("failures")).size();
    }
    assertEquals("results + failures == inputs x arms", ROWS * arms, results + failures);
    // Only the GPU arm may fail (on a machine without CUDA), and then for every element.
    assertTrue(failures == 0 || failures == ROWS);
  }

  @Test
  public void everyWithMethodOfModelIsUsedHere() {
    List<String> missing = new ArrayList<>();
    for (Method m : Model.class.getDeclaredMethods()) {
      if (Modifier.isPublic(m.getModifiers()) && m.getName().startsWith("with")
          && !USED.contains(m.getName())) {
        missing.add(m.getName());
      }
    }
    assertEquals("Model's withX methods without an arm in ModelSettingsIT", List.of(), missing);
  }
}
