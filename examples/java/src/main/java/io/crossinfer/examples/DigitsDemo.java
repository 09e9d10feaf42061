package io.crossinfer.examples;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.crossinfer.ABTest;
import io.crossinfer.ExperimentReport;
import io.crossinfer.Format;
import io.crossinfer.InferenceResult;
import io.crossinfer.Model;
import io.crossinfer.Op;
import io.crossinfer.Sequence;
import io.crossinfer.SklearnMethod;
import io.crossinfer.launch.ExpansionServiceLauncher;
import io.crossinfer.launch.FlinkCluster;
import io.crossinfer.launch.FlinkJobServer;
import io.crossinfer.launch.Jobs;
import io.crossinfer.launch.PrismJobServer;
import io.crossinfer.launch.Python;
import io.crossinfer.launch.PythonJobServer;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.apache.beam.runners.portability.PortableRunner;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.Reshuffle;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;

/**
 * The Java demo: an A/B test and a sequence of models on the handwritten digits, run end to end
 * from a Java pipeline through the crossinfer expansion service on a local portable runner.
 *
 * <ul>
 *   <li>A/B test {@code digits_ab}: 90% of users (sticky by key) to a scikit-learn logistic
 *       regression, 10% to a PyTorch MLP.
 *   <li>Sequence {@code digits_seq}: scikit-learn PCA to 16 components, then a PyTorch MLP on
 *       them.
 * </ul>
 *
 * <p>It trains the demo models if needed ({@code python -m crossinfer.demo}), starts an expansion
 * service (with a Python worker pool) and a job server, runs one pipeline with both transforms
 * (the A/B test {@link io.crossinfer.InferenceTransform#withTiming() withTiming()}, so its report
 * has per-arm latency percentiles),
 * and prints per arm and per stage path the rows, share and accuracy against the true digits,
 * plus a few rows. On Flink it also prints which TaskManagers ran the inference steps. It ends
 * with the A/B test's experiment report: {@link ExperimentReport} in the pipeline (through the
 * service; its rows are printed), then {@code crossinfer report} on the written result rows,
 * which prints the summary with the decision and writes an HTML report with plots.
 *
 * <pre>
 * mvn -B -q -f java/pom.xml test-compile exec:java -Dexec.mainClass=io.crossinfer.examples.DigitsDemo
 *     [-Dexec.args="--runner=prism --limit=500"]
 * </pre>
 *
 * <p>Arguments: {@code --runner=portable} (Beam's Python job server, default), {@code prism}, or
 * {@code flink} (a local Flink cluster, 1 JobManager and 2 TaskManagers, and Beam's Flink job
 * server: {@link FlinkCluster}, {@link FlinkJobServer});
 * {@code --limit=N} digits (default all 1,797); {@code --models=DIR} (default {@code
 * .work/demo_models} at the repository root); {@code --expansion-service=host:port} to use a
 * running service (its model roots must include DIR); {@code --job-endpoint=host:port} to use a
 * running job server; {@code --out=DIR} for the outputs and logs (default a new directory under
 * {@code .work/}).
 */
public final class DigitsDemo {
  /** The A/B spec the demo writes next to its outputs, for {@code crossinfer report}. */
  static final String SPEC_FILE = "digits_ab.json";

  private DigitsDemo() {}

  /** The A/B test of the demo, over the models in {@code models}. */
  public static ABTest abTest(Path models) throws IOException {
    String lrPath = models.resolve("digits_lr.skops").toString();
    Model lr =
        Model.sklearn("digits_lr", lrPath)
            .withFormat(Format.SKOPS)
            .withMethod(SklearnMethod.PREDICT_PROBA)
            .withPreprocess(Op.scale(1.0 / 16))
            .withPostprocess(Op.argmax())
            .withSha256(sha256(Paths.get(lrPath)));
    Model mlp =
        Model.pytorch("digits_mlp", models.resolve("digits_mlp.pt").toString())
            .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(64, 64, 10)))
            .withPreprocess(Op.scale(1.0 / 16))
            .withPostprocess(Op.softmax(), Op.argmax());
    return ABTest.of("digits_ab", ABTest.Arm.of("control", 90, lr), ABTest.Arm.of("treatment", 10, mlp))
        .withHashSplit("digits-2026");
  }

  /** The sequence of the demo: PCA, then an MLP on the components. */
  public static Sequence sequence(Path models) {
    return Sequence.of(
        "digits_seq",
        Model.sklearn("digits_pca", models.resolve("digits_pca.skops").toString())
            .withFormat(Format.SKOPS)
            .withMethod(SklearnMethod.TRANSFORM)
            .withPreprocess(Op.scale(1.0 / 16)),
        Model.pytorch("digits_pca_mlp", models.resolve("digits_pca_mlp.pt").toString())
            .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(16, 32, 10)))
            .withPostprocess(Op.softmax(), Op.argmax()));
  }

  public static void main(String[] args) throws Exception {
    int code = run(args, System.out);
    // Beam and gRPC leave non-daemon threads behind; the demo is done.
    System.exit(code);
  }

  /** Runs the demo, printing to {@code out}; returns the exit code. */
  public static int run(String[] args, PrintStream out) throws Exception {
    Map<String, String> opts = parse(args);
    Path python = Python.resolve();
    Path root = repositoryRoot();
    Path models =
        Paths.get(opts.getOrDefault("models", root.resolve(".work/demo_models").toString()))
            .toAbsolutePath();
    int limit = Integer.parseInt(opts.getOrDefault("limit", "100000"));
    String runner = opts.getOrDefault("runner", "portable");
    if (!List.of("portable", "prism", "flink").contains(runner)) {
      out.println("--runner must be 'portable', 'prism' or 'flink', got '" + runner + "'");
      return 2;
    }

    out.println("== crossinfer Java demo");
    out.println("python: " + python);
    out.println("training the demo models (kept if already there) in " + models + " ...");
    DigitsData.prepareModels(python, models);
    List<Row> rows = DigitsData.load(DigitsData.sklearnDigitsCsv(python), limit);
    Path outDir;
    if (opts.containsKey("out")) {
      outDir = Files.createDirectories(Paths.get(opts.get("out")).toAbsolutePath());
    } else {
      Path work = Files.createDirectories(root.resolve(".work"));
      outDir = Files.createTempDirectory(work, "java-demo-");
    }

    List<AutoCloseable> started = new ArrayList<>();
    try {
      String service = opts.get("expansion-service");
      if (service == null) {
        ExpansionServiceLauncher launcher =
            ExpansionServiceLauncher.builder()
                .python(python)
                .modelRoots(models.toString())
                .logFile(outDir.resolve("expansion-service.log"))
                .start();
        started.add(launcher);
        service = launcher.address();
      }
      String endpoint = opts.get("job-endpoint");
      String runnerName;
      PortablePipelineOptions options;
      FlinkCluster cluster = null;
      if (endpoint == null && runner.equals("flink")) {
        cluster = FlinkCluster.builder().workDirectory(outDir.resolve("flink")).start();
        started.add(cluster);
        FlinkJobServer jobServer =
            FlinkJobServer.start(cluster, outDir.resolve("flink-job-server.log"));
        started.add(jobServer);
        options = jobServer.pipelineOptions();
        runnerName = "Flink job server at " + jobServer.endpoint() + " -> Flink cluster at "
            + cluster.restAddress() + " (1 JobManager, " + cluster.parallelism()
            + " TaskManagers)";
      } else if (endpoint == null && runner.equals("prism")) {
        PrismJobServer prism = PrismJobServer.start();
        started.add(prism);
        options = prism.pipelineOptions();
        runnerName = "Prism at " + prism.endpoint();
      } else if (endpoint == null) {
        PythonJobServer jobServer =
            PythonJobServer.start(python, outDir.resolve("job-server.log"),
                Duration.ofMinutes(2));
        started.add(jobServer);
        options = jobServer.pipelineOptions();
        runnerName = "Beam Python job server at " + jobServer.endpoint();
      } else {
        options = PipelineOptionsFactory.create().as(PortablePipelineOptions.class);
        options.setRunner(PortableRunner.class);
        options.setJobEndpoint(endpoint);
        options.setDefaultEnvironmentType("LOOPBACK"); // the Java steps run in this JVM
        // What a Flink job server needs (FlinkJobServer.pipelineOptions() explains); other job
        // servers ignore it.
        options.setEnvironmentCacheMillis(FlinkJobServer.ENVIRONMENT_CACHE_MILLIS);
        runnerName = "job server at " + endpoint;
      }
      options.setJobName("crossinfer-java-demo");
      out.println("expansion service: " + service + "; runner: PortableRunner -> " + runnerName);
      out.println("digits: " + rows.size() + " rows; outputs in " + outDir);

      Pipeline p = pipeline(options, rows, models, service, outDir);
      long start = System.nanoTime();
      PipelineResult.State state =
          Jobs.waitUntilFinish(p.run(), Duration.ofMinutes(10));
      double seconds = (System.nanoTime() - start) / 1e9;
      if (state != PipelineResult.State.DONE) {
        out.println("pipeline ended in state " + state + " after " + seconds + " s; logs in "
            + outDir);
        return 1;
      }
      out.printf("pipeline DONE in %.1f s%n", seconds);
      report(out, "A/B test digits_ab: hash split 90/10 on 'key' (salt digits-2026)", "arm",
          JsonLinesSink.read(outDir.resolve("ab")),
          JsonLinesSink.read(outDir.resolve("ab-failures")), rows.size());
      report(out, "Sequence digits_seq: digits_pca (sklearn PCA, 16 components) -> digits_pca_mlp"
              + " (PyTorch MLP)", "stage path",
          JsonLinesSink.read(outDir.resolve("sequence")),
          JsonLinesSink.read(outDir.resolve("sequence-failures")), rows.size());
      boolean reported = experimentReport(out, python, outDir);
      if (cluster != null) {
        String job = cluster.jobId(options.getJobName());
        out.println();
        out.println("== Flink: records the inference steps read, per TaskManager");
        for (String step : List.of("RunInference[digits_ab", "RunInference[digits_seq")) {
          out.printf("  %-42s %s%n", step + "...]", cluster.recordsReadByTaskManager(job, step));
        }
      }
      return reported ? 0 : 1;
    } finally {
      for (int i = started.size() - 1; i >= 0; i--) {
        started.get(i).close();
      }
    }
  }

  /**
   * The demo's pipeline: the digits, spread over the workers, into the A/B test and the sequence
   * (expanded by the service at {@code service}), every output written as JSON lines under {@code
   * outDir} ({@code ab}, {@code ab-failures}, {@code sequence}, {@code sequence-failures}).
   */
  public static Pipeline pipeline(
      PortablePipelineOptions options, List<Row> rows, Path models, String service, Path outDir)
      throws IOException {
    Pipeline p = Pipeline.create(options);
    PCollection<Row> digits =
        p.apply("Digits", Create.of(rows).withRowSchema(DigitsData.SCHEMA))
            // Create emits every row from one worker; without this, a runner with many workers
            // (Flink) runs the whole job on one of them.
            .apply("Spread over workers", Reshuffle.viaRandomKey());
    // withTiming(): each result row carries model_ms and batch_size, from which the experiment
    // report gives per-arm latency percentiles.
    InferenceResult ab =
        digits.apply("A/B test", abTest(models).withExpansionService(service).withTiming());
    InferenceResult seq =
        digits.apply("PCA then MLP", sequence(models).withExpansionService(service));
    ab.output().apply("Write A/B", JsonLinesSink.to(outDir.resolve("ab")));
    ab.failures().apply("Write A/B failures", JsonLinesSink.to(outDir.resolve("ab-failures")));
    // The experiment report of the A/B test, against the true digit of each input row.
    ExperimentReport.Output report =
        ab.apply("Experiment report", ExperimentReport.of(ab).withGroundTruth("digit"));
    report.arms().apply("Write report arms", JsonLinesSink.to(outDir.resolve("report-arms")));
    report.pairs().apply("Write report pairs", JsonLinesSink.to(outDir.resolve("report-pairs")));
    // crossinfer report reads the arms and weights from the spec.
    Files.writeString(outDir.resolve(SPEC_FILE), ab.specJson(), StandardCharsets.UTF_8);
    seq.output().apply("Write sequence", JsonLinesSink.to(outDir.resolve("sequence")));
    seq.failures()
        .apply("Write sequence failures", JsonLinesSink.to(outDir.resolve("sequence-failures")));
    return p;
  }

  /**
   * Prints the experiment report rows the pipeline wrote, then runs {@code crossinfer report} on
   * the A/B result rows (its summary, with the decision, goes to {@code out}; it writes {@code
   * experiment-report.html}). Returns false when the CLI fails (its log is in {@code outDir}).
   */
  private static boolean experimentReport(PrintStream out, Path python, Path outDir)
      throws IOException, InterruptedException {
    out.println();
    out.println("== Experiment report of digits_ab: ExperimentReport in the pipeline (computed by"
        + " the expansion service), ground truth 'digit'");
    List<ObjectNode> arms = JsonLinesSink.read(outDir.resolve("report-arms"));
    arms.sort((a, b) -> a.get("arm").asText().compareTo(b.get("arm").asText()));
    out.printf("  %-10s %6s %8s %7s %7s  %-22s  %s%n", "arm", "rows", "failures", "share",
        "weight", "accuracy [95% CI]", "latency p50/p95/p99 ms per element");
    for (ObjectNode a : arms) {
      out.printf("  %-10s %6d %8d %6.1f%% %6.1f%%  %.3f [%.3f, %.3f]  %s%n",
          a.get("arm").asText(), a.get("count").asLong(), a.get("failures").asLong(),
          100 * a.get("share").asDouble(), 100 * a.get("expected_share").asDouble(),
          a.get("metric_value").asDouble(), a.get("metric_ci_low").asDouble(),
          a.get("metric_ci_high").asDouble(), latency(a));
    }
    if (!arms.isEmpty()) {
      out.printf("  sample-ratio mismatch (chi-square against the weights): p=%.2g%n",
          arms.get(0).get("srm_p_value").asDouble());
    }
    for (ObjectNode pair : JsonLinesSink.read(outDir.resolve("report-pairs"))) {
      out.printf("  %s - %s: accuracy %+.4f [%.4f, %.4f], p=%.3g (%s)%n",
          pair.get("treatment").asText(), pair.get("control").asText(),
          pair.get("difference").asDouble(), pair.get("difference_ci_low").asDouble(),
          pair.get("difference_ci_high").asDouble(), pair.get("p_value").asDouble(),
          pair.get("test").asText());
    }

    Path html = outDir.resolve("experiment-report.html");
    List<String> command =
        new ArrayList<>(
            List.of(
                python.toString(), "-m", "crossinfer.experiments.cli", "report",
                outDir.resolve("ab").toString(),
                "--spec", outDir.resolve(SPEC_FILE).toString(),
                "--ground-truth", "digit",
                "--html", html.toString()));
    if (Files.isDirectory(outDir.resolve("ab-failures"))) { // the sink writes none for none
      command.addAll(List.of("--failures", outDir.resolve("ab-failures").toString()));
    }
    out.println();
    out.println("== crossinfer report (the CLI on the A/B result rows in " + outDir + ")");
    Path log = outDir.resolve("crossinfer-report.log");
    Process cli =
        new ProcessBuilder(command)
            .redirectError(log.toFile())
            .redirectOutput(ProcessBuilder.Redirect.PIPE)
            .start();
    String text = new String(cli.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    if (!cli.waitFor(5, TimeUnit.MINUTES)) {
      cli.destroyForcibly();
      out.println("crossinfer report timed out; log: " + log);
      return false;
    }
    for (String line : text.split("\n", -1)) {
      out.println(line.isEmpty() ? "" : "  " + line);
    }
    if (cli.exitValue() != 0) {
      out.println("crossinfer report failed (exit " + cli.exitValue() + "); log: " + log);
      return false;
    }
    return true;
  }

  /** An arm's latency percentiles (ms per element, all stages), or "-" without timing. */
  private static String latency(ObjectNode arm) {
    if (!arm.hasNonNull("latency_p50_ms")) {
      return "-";
    }
    return String.format("%.3g/%.3g/%.3g", arm.get("latency_p50_ms").asDouble(),
        arm.get("latency_p95_ms").asDouble(), arm.get("latency_p99_ms").asDouble());
  }

  private static void report(
      PrintStream out, String title, String groupName, List<ObjectNode> results,
      List<ObjectNode> failures, int inputs) {
    out.println();
    out.println("== " + title);
    Map<String, long[]> byPath = new TreeMap<>();
    for (ObjectNode r : results) {
      long[] c = byPath.computeIfAbsent(r.get("path").asText(), k -> new long[2]);
      c[0]++;
      if (r.get("label").asLong() == r.get("digit").asLong()) {
        c[1]++;
      }
    }
    out.printf("  %-42s %6s %7s %9s%n", groupName, "rows", "share", "accuracy");
    for (Map.Entry<String, long[]> e : byPath.entrySet()) {
      long n = e.getValue()[0];
      out.printf("  %-42s %6d %6.1f%% %8.1f%%%n", e.getKey(), n, 100.0 * n / inputs,
          100.0 * e.getValue()[1] / n);
    }
    out.printf("  results %d + failures %d = %d inputs%n", results.size(), failures.size(),
        inputs);
    results.stream()
        .sorted((a, b) -> Long.compare(a.get("id").asLong(), b.get("id").asLong()))
        .limit(3)
        .forEach(
            r ->
                out.printf(
                    "  row id=%d key=%s digit=%d -> %s label=%d score=%.3f%n",
                    r.get("id").asLong(), r.get("key").asText(), r.get("digit").asLong(),
                    r.get("path").asText(), r.get("label").asLong(), r.get("score").asDouble()));
    failures.stream().limit(3).forEach(f -> out.println(
        "  failure at " + f.get("node").asText() + ": " + f.get("error").asText()));
  }

  private static Map<String, String> parse(String[] args) {
    Map<String, String> opts = new LinkedHashMap<>();
    for (String arg : args) {
      if (!arg.startsWith("--") || !arg.contains("=")) {
        throw new IllegalArgumentException(
            "expected --name=value arguments (--runner, --limit, --models, --out,"
                + " --expansion-service, --job-endpoint), got '" + arg + "'");
      }
      opts.put(arg.substring(2, arg.indexOf('=')), arg.substring(arg.indexOf('=') + 1));
    }
    return opts;
  }

  /** The directory holding {@code .venv} (the repository), else the working directory. */
  private static Path repositoryRoot() {
    Path dir = Paths.get("").toAbsolutePath();
    for (Path d = dir; d != null; d = d.getParent()) {
      if (Files.isDirectory(d.resolve(".venv")) || Files.isDirectory(d.resolve(".git"))) {
        return d;
      }
    }
    return dir;
  }

  private static String sha256(Path file) throws IOException {
    try {
      return HexFormat.of()
          .formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(file)));
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }
}
