package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.crossinfer.InferenceResult;
import io.crossinfer.Keyed;
import io.crossinfer.examples.DigitsData;
import io.crossinfer.examples.DigitsDemo;
import io.crossinfer.examples.JsonLinesSink;
import io.crossinfer.launch.ExpansionServiceLauncher;
import io.crossinfer.launch.FlinkCluster;
import io.crossinfer.launch.FlinkJobServer;
import io.crossinfer.launch.Jobs;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.coders.SerializableCoder;
import org.apache.beam.sdk.metrics.MetricNameFilter;
import org.apache.beam.sdk.metrics.MetricResult;
import org.apache.beam.sdk.metrics.MetricResults;
import org.apache.beam.sdk.metrics.MetricsFilter;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.options.StreamingOptions;
import org.apache.beam.sdk.testing.TestStream;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.Reshuffle;
import org.apache.beam.sdk.transforms.windowing.FixedWindows;
import org.apache.beam.sdk.transforms.windowing.Window;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.joda.time.Duration;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * crossinfer on a real Flink cluster: one JobManager and two TaskManagers (one slot each, each its
 * own JVM, {@link FlinkCluster}), Beam's Flink job server ({@link FlinkJobServer}, Beam 2.62), the
 * crossinfer expansion service with its external Python worker pool. The cluster starts once;
 * five jobs run on it:
 *
 * <ol>
 *   <li>the Java demo's pipeline (examples/java {@link DigitsDemo}: A/B test + sequence);
 *   <li>a Java batch pipeline with a keyed node (three routes, and rows of every kind of bad
 *       input) and a single-route keyed node (its route sharded over both TaskManagers);
 *   <li>a Java streaming pipeline (TestStream, fixed windows) with a hash-split A/B test;
 *   <li>a Python pipeline with crossinfer's transforms (ABTest, Sequence, Keyed) submitted to the
 *       same job server;
 *   <li>a Java pipeline the 2.62 runner cannot run (a TestStream with a Java coder), the control of
 *       the version policy.
 * </ol>
 *
 * <p>Every result and failure equals crossinfer's Python transform run directly (FnApiRunner) on
 * the same rows and spec ({@link SameRows}); Flink's REST API shows which TaskManagers ran the
 * inference steps.
 */
public class FlinkIT {
  private static final int ROWS = 200;
  private static final int STREAM_ROWS = 60;
  private static final int SINGLE_ROUTE_BATCH = 10;
  private static final long WINDOW_SECONDS = 10;
  private static final String DEMO_JOB = "crossinfer-java-demo";
  private static final String KEYED_JOB = "crossinfer-flink-keyed";
  private static final String STREAM_JOB = "crossinfer-flink-stream";
  private static final String PYTHON_JOB = "crossinfer-flink-python";
  private static final String CONTROL_JOB = "crossinfer-flink-java-coder";

  private static ExpansionServiceLauncher service;
  private static FlinkCluster cluster;
  private static FlinkJobServer jobServer;
  private static JsonNode expected;
  private static final Map<String, Job> JOBS = new TreeMap<>();

  /**
   * What a job left: its outputs' directory, its end state or error, what it printed, and its
   * Beam metrics (null where the job did not run through {@link #run}).
   */
  record Job(Path out, PipelineResult.State state, Throwable error, String printed,
      List<String> javaObjectsForTheRunner, MetricResults metrics) {}

  @BeforeClass
  public static void runJobs() throws Exception {
    Path python = E2e.python();
    Path models = E2e.models();
    Path lib = E2e.flinkLib();
    Path logs = E2e.freshDir("flink");
    // The service (its Python imports) starts while the cluster does.
    CompletableFuture<ExpansionServiceLauncher> starting =
        CompletableFuture.supplyAsync(
            () -> {
              try {
                return ExpansionServiceLauncher.builder()
                    .python(python)
                    .modelRoots(models.toString())
                    .logFile(logs.resolve("expansion-service.log"))
                    .start();
              } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
              }
            });
    try {
      cluster = FlinkCluster.builder().lib(lib).workDirectory(logs.resolve("cluster")).start();
      jobServer =
          FlinkJobServer.start(cluster, logs.resolve("job-server.log"));
    } finally {
      service = starting.join();
    }

    List<Row> rows = E2e.digits(ROWS);
    expected =
        E2e.pythonDirect(
            Map.of(
                "ab", new E2e.Run(E2e.abTest().toSpecJson(), rows),
                "sequence", new E2e.Run(E2e.sequence().toSpecJson(), rows),
                "keyed", new E2e.Run(E2e.keyed().toSpecJson(), keyedRows(rows)),
                "single", new E2e.Run(singleRoute().toSpecJson(), singleRouteRows(rows)),
                "stream", new E2e.Run(E2e.abTest().toSpecJson(), rows.subList(0, STREAM_ROWS))));

    JOBS.put(DEMO_JOB, demo(rows, models));
    JOBS.put(KEYED_JOB, keyed(rows));
    JOBS.put(STREAM_JOB, stream(rows.subList(0, STREAM_ROWS)));
    JOBS.put(PYTHON_JOB, python(rows));
    JOBS.put(CONTROL_JOB, javaCoderControl());
  }

  @AfterClass
  public static void stop() {
    if (jobServer != null) {
      jobServer.close();
    }
    if (cluster != null) {
      cluster.close();
    }
    if (service != null) {
      service.close();
    }
  }

  // ------------------------------------------------------------------------------- the jobs

  /** The demo's pipeline, through {@link DigitsDemo#run} with this cluster and service. */
  private static Job demo(List<Row> rows, Path models) throws Exception {
    Path out = E2e.freshDir("flink-demo");
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    int code;
    Throwable error = null;
    try (PrintStream print = new PrintStream(bytes, true, StandardCharsets.UTF_8)) {
      code =
          DigitsDemo.run(
              new String[] {
                "--job-endpoint=" + jobServer.endpoint(),
                "--expansion-service=" + service.address(),
                "--limit=" + rows.size(),
                "--models=" + models,
                "--out=" + out,
              },
              print);
    } catch (Exception e) {
      code = -1;
      error = e;
    }
    List<String> boundary =
        RunnerBoundary.javaObjectsForTheRunner(
            DigitsDemo.pipeline(jobServer.pipelineOptions(), rows, models, service.address(),
                E2e.freshDir("unused")));
    return new Job(out, code == 0 ? PipelineResult.State.DONE : PipelineResult.State.FAILED,
        error, bytes.toString(StandardCharsets.UTF_8), boundary, null);
  }

  /** Keyed: three routes over the digits plus bad rows; and a keyed node with one route. */
  private static Job keyed(List<Row> rows) throws Exception {
    Path out = E2e.freshDir("flink-keyed");
    PortablePipelineOptions options = jobServer.pipelineOptions();
    options.setJobName(KEYED_JOB);
    Pipeline p = Pipeline.create(options);
    write(
        spread(p, "Keyed digits", keyedRows(rows))
            .apply("Keyed", E2e.keyed().withExpansionService(service.address())),
        out, "keyed");
    write(
        spread(p, "Single-route digits", singleRouteRows(rows))
            .apply("Single route", singleRoute().withExpansionService(service.address())),
        out, "single");
    return run(p, out);
  }

  /** Streaming: row i at second i, fixed 10 s windows, the demo's hash-split A/B test. */
  private static Job stream(List<Row> rows) throws Exception {
    Path out = E2e.freshDir("flink-stream");
    PortablePipelineOptions options = jobServer.pipelineOptions();
    options.setJobName(STREAM_JOB);
    options.as(StreamingOptions.class).setStreaming(true);
    Pipeline p = Pipeline.create(options);
    write(
        p.apply("Digits arriving", PrismIT.digitStream(rows))
            .apply("Fixed windows",
                Window.<Row>into(FixedWindows.of(Duration.standardSeconds(WINDOW_SECONDS))))
            .apply("A/B", E2e.abTest().withExpansionService(service.address())),
        out, "stream");
    return run(p, out);
  }

  /** crossinfer's Python transforms, as a Python pipeline on this job server. */
  private static Job python(List<Row> rows) throws Exception {
    Throwable error = null;
    JsonNode got = null;
    try {
      got =
          E2e.python(
              Map.of(
                  "ab", new E2e.Run(E2e.abTest().toSpecJson(), rows),
                  "sequence", new E2e.Run(E2e.sequence().toSpecJson(), rows),
                  "keyed", new E2e.Run(E2e.keyed().toSpecJson(), keyedRows(rows))),
              List.of(),
              "flink-python", "--job-endpoint", jobServer.endpoint(), "--job-name", PYTHON_JOB);
    } catch (Throwable e) {
      error = e;
    }
    Path out = E2e.freshDir("flink-python");
    if (got != null) {
      E2e.MAPPER.writeValue(out.resolve("results.json").toFile(), got);
    }
    return new Job(out, got != null ? PipelineResult.State.DONE : PipelineResult.State.FAILED,
        error, "", List.of(), null);
  }

  /** A TestStream whose coder is a Java object: the 2.62 runner must deserialize it. */
  private static Job javaCoderControl() throws Exception {
    PortablePipelineOptions options = jobServer.pipelineOptions();
    options.setJobName(CONTROL_JOB);
    options.as(StreamingOptions.class).setStreaming(true);
    Pipeline p = Pipeline.create(options);
    p.apply("Words", TestStream.create(SerializableCoder.of(String.class))
            .addElements("a", "b")
            .advanceWatermarkToInfinity())
        .apply("Shout", MapElements.into(TypeDescriptors.strings()).via((String w) -> w + "!"));
    return run(p, E2e.freshDir("flink-control"));
  }

  /** Runs {@code p} (3 minutes at most, then cancelled), keeping its end state or error. */
  private static Job run(Pipeline p, Path out) {
    List<String> boundary = RunnerBoundary.javaObjectsForTheRunner(p);
    try {
      PipelineResult result = p.run();
      PipelineResult.State state = Jobs.waitUntilFinish(result, java.time.Duration.ofMinutes(3));
      if (state == null) {
        result.cancel(); // frees the cluster's slots for the next job
      }
      return new Job(out, state, null, "", boundary, state == null ? null : metrics(result));
    } catch (Throwable e) {
      return new Job(out, PipelineResult.State.FAILED, e, "", boundary, null);
    }
  }

  /** The job's Beam metrics from the job server, or null where it serves none. */
  private static MetricResults metrics(PipelineResult result) {
    try {
      return result.metrics();
    } catch (UnsupportedOperationException e) {
      return null;
    }
  }

  /** {@code rows}, spread over the workers (Create emits everything from one). */
  private static PCollection<Row> spread(Pipeline p, String name, List<Row> rows) {
    return p.apply(name, Create.of(rows).withRowSchema(DigitsData.SCHEMA))
        .apply("Spread " + name, Reshuffle.viaRandomKey());
  }

  private static void write(InferenceResult result, Path out, String name) {
    result.output().apply("Write " + name, JsonLinesSink.to(out.resolve(name)));
    result.failures().apply("Write " + name + " failures",
        JsonLinesSink.to(out.resolve(name + "-failures")));
  }

  /** The digits keyed round-robin by the keyed node's route keys, then one bad row of each kind. */
  static List<Row> keyedRows(List<Row> rows) {
    List<Row> keyed = new ArrayList<>(PortableRunnerIT.keyedRows(rows));
    List<Double> good = java.util.Collections.nCopies(64, 3.0);
    keyed.add(DigitsData.row(9002, "sklearn", 2, List.of())); // empty features
    keyed.add(DigitsData.row(9003, "sklearn", 3, good.subList(0, 63))); // the model wants 64
    keyed.add(DigitsData.row(9004, "no-such-route", 4, good)); // no route, no default
    return keyed;
  }

  /**
   * A keyed node with one route and the default shards (16: its one model fits the cache), the
   * route's model batching 10 rows: 200 rows are 20 runs of a batch, which go to consecutive
   * shards, and Flink spreads the (route, shard) groups over both TaskManagers.
   */
  static Keyed singleRoute() throws Exception {
    return Keyed.of("single",
        Keyed.Route.of(E2e.lr().withBatching(null, SINGLE_ROUTE_BATCH, null), "sklearn"));
  }

  static List<Row> singleRouteRows(List<Row> rows) {
    return rows.stream()
        .map(r -> DigitsData.row(r.getInt64("id"), "sklearn", r.getInt64("digit"),
            r.getArray("features").stream().map(x -> (Double) x).toList()))
        .toList();
  }

  // ------------------------------------------------------------------------------- checks

  private static Job done(String name) {
    Job job = JOBS.get(name);
    assertNotNull(name + " did not run", job);
    if (job.error() != null) {
      throw new AssertionError(name + " failed; cluster:\n" + cluster.outputTail(), job.error());
    }
    assertEquals(name + " state", PipelineResult.State.DONE, job.state());
    return job;
  }

  private static List<ObjectNode> read(Job job, String name) throws Exception {
    return JsonLinesSink.read(job.out().resolve(name));
  }

  private static Iterable<JsonNode> expected(String run, String what) {
    return expected.get(run).get(what)::elements;
  }

  /** Per TaskManager, the records the job's steps named like {@code step} read. */
  private static Map<String, Long> records(String job, String step) throws Exception {
    return cluster.recordsReadByTaskManager(cluster.jobId(job), step);
  }

  /** A Beam counter's value (attempted: Flink's job server reports no committed values). */
  private static long counter(Job job, String namespace, String name) {
    assertNotNull("no metrics", job.metrics());
    long total = 0;
    boolean found = false;
    for (MetricResult<Long> c : job.metrics().queryMetrics(MetricsFilter.builder()
        .addNameFilter(MetricNameFilter.named(namespace, name)).build()).getCounters()) {
      total += c.getAttempted();
      found = true;
    }
    assertTrue("no counter " + namespace + ":" + name, found);
    return total;
  }

  private static void assertBothTaskManagersRan(String what, Map<String, Long> records) {
    assertEquals(what + ": TaskManagers " + records, Set.of("tm1", "tm2"), records.keySet());
    records.forEach((tm, n) -> assertTrue(what + ": " + tm + " read nothing: " + records, n > 0));
  }

  @Test
  public void demoPrintsItsReportOnFlink() throws Exception {
    String report = done(DEMO_JOB).printed();
    assertTrue(report, report.contains("== A/B test digits_ab"));
    assertTrue(report, report.contains("digits_ab/treatment/digits_mlp"));
    assertTrue(report, report.contains("== Sequence digits_seq"));
    assertEquals(report, 2,
        report.split("results " + ROWS + " \\+ failures 0 = " + ROWS + " inputs", -1).length - 1);
  }

  @Test
  public void demoResultsEqualPythonDirect() throws Exception {
    Job job = done(DEMO_JOB);
    for (String run : List.of("ab", "sequence")) {
      SameRows.assertSameResults("demo " + run + " on Flink", expected(run, "results"),
          read(job, run));
      SameRows.assertSameFailures("demo " + run + " on Flink", expected(run, "failures"),
          read(job, run + "-failures"));
    }
  }

  @Test
  public void demoInferenceRanOnBothTaskManagers() throws Exception {
    done(DEMO_JOB);
    assertBothTaskManagersRan("A/B", records(DEMO_JOB, "RunInference[digits_ab"));
    assertBothTaskManagersRan("sequence", records(DEMO_JOB, "RunInference[digits_seq"));
  }

  @Test
  public void keyedResultsAndFailuresEqualPythonDirect() throws Exception {
    Job job = done(KEYED_JOB);
    for (String run : List.of("keyed", "single")) {
      SameRows.assertSameResults(run + " on Flink", expected(run, "results"), read(job, run));
      SameRows.assertSameFailures(run + " on Flink", expected(run, "failures"),
          read(job, run + "-failures"));
    }
    assertEquals("every bad row is a failure", 3, read(job, "keyed-failures").size());
    assertEquals(ROWS, read(job, "keyed").size());
    assertEquals(ROWS, read(job, "single").size());
  }

  @Test
  public void keyedRoutesRanOnBothTaskManagers() throws Exception {
    done(KEYED_JOB);
    // Three routes, one GroupByKey group each, hashed over two workers.
    assertBothTaskManagersRan("keyed", records(KEYED_JOB, "RunInference[digits_keyed"));
  }

  @Test
  public void aSingleRouteKeyedNodeRunsOnBothTaskManagersLoadingItsModelOncePerWorker()
      throws Exception {
    Job job = done(KEYED_JOB);
    // A keyed node groups by (route, shard): one route's shards spread over the workers.
    Map<String, Long> records = records(KEYED_JOB, "RunInference[single");
    assertBothTaskManagersRan("single-route keyed node", records);
    // Each worker process loads the route's model at most once (its cache holds the node's one
    // model): loads <= workers x routes, one Python worker per TaskManager here.
    long loads = counter(job, "crossinfer/single", "model_loads");
    int routes = singleRoute().routes().size();
    System.out.println("single-route keyed node on Flink: records per TaskManager " + records
        + ", model loads " + loads);
    assertTrue("model loads " + loads, loads >= 1);
    assertTrue("model loads " + loads + " > TaskManagers x routes",
        loads <= (long) cluster.parallelism() * routes);
  }

  @Test
  public void streamingAbTestEqualsPythonDirectInItsWindows() throws Exception {
    Job job = done(STREAM_JOB);
    List<ObjectNode> results = read(job, "stream");
    SameRows.assertSameResults("streaming A/B on Flink", expected("stream", "results"), results);
    SameRows.assertSameFailures("streaming A/B on Flink", expected("stream", "failures"),
        read(job, "stream-failures"));
    Set<Long> windows = new TreeSet<>();
    for (ObjectNode r : results) {
      long id = r.get("id").asLong();
      long start = r.get("window_start").asLong();
      assertEquals("row " + id + " window", (id / WINDOW_SECONDS) * WINDOW_SECONDS * 1000, start);
      windows.add(start);
    }
    assertEquals(STREAM_ROWS / WINDOW_SECONDS, windows.size());
  }

  @Test
  public void streamingInferenceRanOnBothTaskManagers() throws Exception {
    done(STREAM_JOB);
    assertBothTaskManagersRan("streaming A/B", records(STREAM_JOB, "RunInference[digits_ab"));
  }

  @Test
  public void pythonPipelinesOnTheSameJobServerEqualPythonDirect() throws Exception {
    Job job = done(PYTHON_JOB);
    JsonNode got = E2e.MAPPER.readTree(job.out().resolve("results.json").toFile());
    for (String run : List.of("ab", "sequence", "keyed")) {
      SameRows.assertSameResults("Python " + run + " on Flink", expected(run, "results"),
          got.get(run).get("results")::elements);
      SameRows.assertSameFailures("Python " + run + " on Flink", expected(run, "failures"),
          got.get(run).get("failures")::elements);
    }
    // Each TaskManager got a Python worker process of its own from the pool (--processes).
    Set<Long> pids = new TreeSet<>();
    got.get("ab").get("results").forEach(r -> pids.add(r.get("pid").asLong()));
    assertTrue("worker processes " + pids, pids.size() >= 2);
    assertFalse("the pool's own process ran inference", pids.contains(got.get("pool_pid").asLong()));
    // A Python pipeline's Flink vertices are named after its top-level transforms.
    assertBothTaskManagersRan("Python A/B", records(PYTHON_JOB, "Infer ab"));
    assertBothTaskManagersRan("Python keyed", records(PYTHON_JOB, "Infer keyed"));
  }

  @Test
  public void crossinferPipelinesNeedNoJavaObjectOnTheRunner() {
    for (String name : List.of(DEMO_JOB, KEYED_JOB, STREAM_JOB)) {
      Job job = done(name);
      assertEquals(name, List.of(), job.javaObjectsForTheRunner());
    }
  }

  @Test
  public void aJavaObjectTheRunnerMustReadFailsAcrossVersions() {
    Job job = JOBS.get(CONTROL_JOB);
    assertFalse("the check sees the TestStream's Java coder",
        job.javaObjectsForTheRunner().isEmpty());
    assertNotNull("a 2.65 Java coder on the 2.62 runner: expected the job to fail, it ended "
        + job.state(), job.error());
    StringBuilder causes = new StringBuilder();
    for (Throwable t = job.error(); t != null; t = t.getCause()) {
      causes.append(t).append('\n');
    }
    assertTrue(causes.toString(), causes.toString().contains("InvalidClassException"));
    assertTrue(causes.toString(), causes.toString().contains("local class incompatible"));
  }
}
