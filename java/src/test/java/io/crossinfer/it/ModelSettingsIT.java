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
import org.apache.beam.sdk.values.Row;
import org.joda.time.Duration;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Every {@code withX} of {@link Model} in a real pipeline: one mirrored A/B test whose arms each
 * use settings of the builder, through the expansion service on Beam's Python job server. Each
 * arm's results and failures must equal those of crossinfer's Python transform on the same
 * (Java-built) spec, and {@link #everyWithMethodOfModelIsUsedHere()} holds the list to the
 * builder: a new {@code withX} without an arm here fails it.
 */
public class ModelSettingsIT {
  private static final int ROWS = 40;
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

  static ABTest settings() throws Exception {
    Path models = E2e.models();
    Path zoo = zoo();
    String lr = models.resolve("digits_lr.pkl").toString();
    String ts = models.resolve("digits_mlp.ts").toString();
    String onnx = models.resolve("digits_mlp.onnx").toString();
    String mlp = models.resolve("digits_mlp.pt").toString();
    Op scale = Op.scale(1.0 / 16);
    List<ABTest.Arm> arms =
        List.of(
            ABTest.Arm.of("joblib", Model.sklearn("s_joblib", models.resolve("digits_lr.joblib")
                    .toString())
                .withFormat(Format.JOBLIB)
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
            ABTest.Arm.of("handler", Model.custom("s_handler", lr, BEAM_HANDLER, Map.of())
                .withPreprocess(scale)),
            ABTest.Arm.of("handler_params", Model.custom("s_handler_params", BEAM_HANDLER)
                .withHandlerClass(BEAM_HANDLER, Map.of("model_uri", lr))
                .withPreprocess(scale)),
            ABTest.Arm.of("predict", Model.sklearn("s_predict", lr)
                .withMethod(SklearnMethod.PREDICT).withPreprocess(scale)),
            ABTest.Arm.of("decision_function", Model.sklearn("s_decision", lr)
                .withMethod(SklearnMethod.DECISION_FUNCTION).withPreprocess(scale)),
            ABTest.Arm.of("transform", Model.sklearn("s_transform", models.resolve(
                    "digits_pca.pkl").toString())
                .withMethod(SklearnMethod.TRANSFORM).withPreprocess(scale)),
            ABTest.Arm.of("auto", Model.onnx("s_auto", onnx).withDevice(Device.AUTO)
                .withPreprocess(scale)),
            ABTest.Arm.of("gpu", Model.pytorch("s_gpu", ts).withDevice(Device.GPU)
                .withPreprocess(scale)),
            ABTest.Arm.of("dtype", Model.sklearn("s_dtype", lr).withDtype("float64")
                .withMethod(SklearnMethod.PREDICT_PROBA).withPreprocess(scale)),
            ABTest.Arm.of("input_shape", Model.sklearn("s_input_shape", lr).withInputShape(64)
                .withPreprocess(scale)),
            ABTest.Arm.of("batching", Model.onnx("s_batching", onnx).withBatching(2, 8, 0.5)
                .withPreprocess(scale)),
            ABTest.Arm.of("batching_sizes", Model.pytorch("s_batching_sizes", ts)
                .withBatching(4, 16).withPreprocess(scale)),
            ABTest.Arm.of("large_model", Model.pytorch("s_large_model", ts)
                .withLargeModel(true).withPreprocess(scale)),
            ABTest.Arm.of("model_copies", Model.onnx("s_model_copies", onnx)
                .withModelCopies(2).withPreprocess(scale)),
            ABTest.Arm.of("ops", Model.pytorch("s_ops", ts)
                .withPreprocess(Op.padTruncate(64), scale)
                .withPostprocess(Op.softmax(), Op.topK(3), Op.argmax())),
            ABTest.Arm.of("sha256", Model.onnx("s_sha256", onnx).withSha256(E2e.sha256(onnx))
                .withPreprocess(scale)),
            ABTest.Arm.of("args_and_output_index", Model.sklearn("s_ridge", zoo.resolve(
                    "ridge.pkl").toString())
                .withInferenceArgs(Map.of("return_std", true))
                .withOutput(1)
                .withPreprocess(scale)),
            ABTest.Arm.of("output_name", Model.onnx("s_probs", zoo.resolve("two_outputs.onnx")
                    .toString())
                .withOutput("probs")
                .withPreprocess(scale)));
    return ABTest.of("settings", arms.toArray(new ABTest.Arm[0])).withMirror();
  }

  /** The extra models of {@code zoo.py}, made once into {@code target/e2e/zoo}. */
  static synchronized Path zoo() throws Exception {
    Path dir = E2e.workDir().resolve("zoo");
    if (!dir.resolve("meanpool.pt").toFile().exists()) {
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
    ABTest spec = settings();
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
    expected =
        E2e.pythonDirect(
            Map.of("settings", new E2e.Run(spec.toSpecJson(), rows)), List.of(BEAM_HANDLER));
    Pipeline p = Pipeline.create(jobServer.pipelineOptions());
    InferenceResult result =
        p.apply("Digits", Create.of(rows).withRowSchema(DigitsData.SCHEMA))
            .apply("Settings", spec.withExpansionService(service.address()));
    result.output().apply("Write results", JsonLinesSink.to(out.resolve("results")));
    result.failures().apply("Write failures", JsonLinesSink.to(out.resolve("failures")));
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
    List<ObjectNode> results = JsonLinesSink.read(out.resolve("results"));
    E2e.assertSameResults("settings (Java vs Python-direct)",
        expected.get("settings").get("results")::elements, results);
    Set<String> failures = new TreeSet<>();
    for (ObjectNode f : JsonLinesSink.read(out.resolve("failures"))) {
      failures.add(f.get("element").get("id").asLong() + " " + f.get("node").asText() + " "
          + f.get("error").asText());
    }
    Set<String> expectedFailures = new TreeSet<>();
    for (JsonNode f : expected.get("settings").get("failures")) {
      expectedFailures.add(f.get("id").asLong() + " " + f.get("node").asText() + " "
          + f.get("error").asText());
    }
    assertEquals(expectedFailures, failures);
  }

  @Test
  public void everyElementReachesEveryArm() throws Exception {
    assertEquals("pipeline state", PipelineResult.State.DONE, state);
    int arms = settings().toSpecJson().split("\"kind\": \"model\"", -1).length - 1;
    int results = JsonLinesSink.read(out.resolve("results")).size();
    int failures = JsonLinesSink.read(out.resolve("failures")).size();
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
