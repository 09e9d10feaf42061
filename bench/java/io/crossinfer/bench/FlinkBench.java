package io.crossinfer.bench;

import io.crossinfer.Inference;
import io.crossinfer.InferenceResult;
import io.crossinfer.PackedFeatures;
import io.crossinfer.launch.FlinkCluster;
import io.crossinfer.launch.FlinkJobServer;
import io.crossinfer.launch.Jobs;
import io.crossinfer.launch.LocalJobServer;
import io.crossinfer.launch.PrismJobServer;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.options.Default;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.Reshuffle;
import org.apache.beam.sdk.values.Row;

/**
 * The Java side of {@code python -m bench.flink}: the same A/B pipeline on Prism and on a local
 * Flink cluster (1 JobManager + 2 TaskManagers, one slot each) at parallelism 1 (one
 * TaskManager does the work) or 2 (both do), timed one run at a time on request.
 *
 * <p>It starts Prism, the cluster and Beam's Flink job server, prints {@code ready}, then reads
 * commands from stdin, one per line, and answers each with one line of JSON:
 *
 * <pre>
 * run prism|flink PARALLELISM ELEMENTS SPEC_FILE -> {"wall_s", "results", "failures", "state",
 *                                                    "taskmanagers": {"tm1": records, ...}}
 * rss                                            -> {"jobmanager": kB, "tm1": kB, ...}
 * quit
 * </pre>
 *
 * <p>The pipeline: {@link #SHARDS} shard numbers, spread over the workers ({@code Reshuffle}:
 * {@code Create} alone puts them all on one), each making its share of the {@code ELEMENTS} rows
 * {@code (id, features)} from {@code --data} (the rows the Python benchmarks use, features packed
 * float32) where it landed, through the spec through {@code --expansion-service}, results and
 * failures counted in this JVM (LOOPBACK). Only shard numbers are shuffled: the rows are made
 * where they are inferred, as a sharded source would read them. {@code wall_s} is {@code run()} to the job's end. {@code taskmanagers}: the
 * records the inference steps read on each TaskManager (Flink's REST API).
 */
public final class FlinkBench {
  /**
   * Shards of the input: enough that random keys split them evenly over two workers (256: 128 +-
   * 8 each), few enough that shuffling them costs nothing.
   */
  static final int SHARDS = 256;

  private static int jobs;

  private FlinkBench() {}

  /** Beam's Flink runner option {@code parallelism}, which the Java client does not declare. */
  public interface FlinkParallelism extends PipelineOptions {
    @Description("The parallelism of the Flink job (-1: the cluster's default)")
    @Default.Integer(-1)
    Integer getParallelism();

    void setParallelism(Integer parallelism);
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> opts = new HashMap<>();
    for (String arg : args) {
      int eq = arg.indexOf('=');
      if (!arg.startsWith("--") || eq < 0) {
        throw new IllegalArgumentException("expected --name=value, got " + arg);
      }
      opts.put(arg.substring(2, eq), arg.substring(eq + 1));
    }
    String service = opts.get("expansion-service");
    String data = Paths.get(opts.get("data")).toAbsolutePath().toString();
    int dim = Integer.parseInt(opts.get("dim"));
    Path work = Files.createDirectories(Paths.get(opts.get("work")).toAbsolutePath());
    PrintStream out = System.out;
    try (PrismJobServer prism = PrismJobServer.start();
        FlinkCluster cluster =
            FlinkCluster.builder().taskManagers(2).workDirectory(work.resolve("cluster")).start();
        FlinkJobServer flink =
            FlinkJobServer.start(cluster, work.resolve("flink-job-server.log"))) {
      out.println("ready " + flink.endpoint());
      out.flush();
      BufferedReader in =
          new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
      for (String line = in.readLine(); line != null; line = in.readLine()) {
        String[] words = line.trim().split("\\s+");
        if (words[0].equals("quit")) {
          break;
        } else if (words[0].equals("rss")) {
          Map<String, Long> pids = new LinkedHashMap<>(cluster.processIds());
          pids.put("flink job server", flink.pid());
          pids.put("prism", prism.pid());
          pids.put("bench jvm (LOOPBACK Java steps)", ProcessHandle.current().pid());
          out.println(pids.entrySet().stream()
              .map(e -> "\"" + e.getKey() + "\": " + rssKb(e.getValue()))
              .collect(Collectors.joining(", ", "{", "}")));
        } else if (words[0].equals("run") && words.length == 5) {
          boolean onFlink = words[1].equals("flink");
          String spec = Files.readString(Paths.get(words[4]));
          out.println(
              run(onFlink ? flink : prism, onFlink ? cluster : null, service, spec,
                  Integer.parseInt(words[2]), Integer.parseInt(words[3]), data, dim));
        } else {
          out.println("{\"error\": \"expected 'run prism|flink PARALLELISM ELEMENTS SPEC',"
              + " 'rss' or 'quit'\"}");
        }
        out.flush();
      }
    }
    System.exit(0); // Beam and gRPC leave non-daemon threads behind
  }

  /** Builds, runs and times one pipeline; returns its JSON line. */
  static String run(LocalJobServer jobServer, FlinkCluster cluster, String service, String spec,
      int parallelism, int elements, String data, int dim) throws Exception {
    Schema schema =
        Schema.builder().addInt64Field("id").addField(PackedFeatures.field("features")).build();
    XlangBench.COUNTS.clear();
    PortablePipelineOptions options = jobServer.pipelineOptions();
    String jobName = "bench-flink-" + (++jobs);
    options.setJobName(jobName);
    options.as(FlinkParallelism.class).setParallelism(parallelism);
    Pipeline p = Pipeline.create(options);
    InferenceResult result =
        p.apply("Shards", Create.of(IntStream.range(0, SHARDS).boxed().toList()))
            .apply("Spread over workers", Reshuffle.viaRandomKey())
            .apply("Generate",
                ParDo.of(new XlangBench.GenerateFn(data, dim, elements, "packed", schema,
                    SHARDS)))
            .setRowSchema(schema)
            .apply("A/B", Inference.ofSpecJson(spec).withExpansionService(service));
    result.output().apply("Count results", ParDo.of(new XlangBench.CountFn("results")));
    result.failures().apply("Count failures", ParDo.of(new XlangBench.CountFn("failures")));
    long start = System.nanoTime();
    PipelineResult.State state = Jobs.waitUntilFinish(p.run(), Duration.ofMinutes(10));
    double seconds = (System.nanoTime() - start) / 1e9;
    String taskManagers = "{}";
    if (cluster != null && state == PipelineResult.State.DONE) {
      taskManagers =
          cluster.recordsReadByTaskManager(cluster.jobId(jobName), "RunInference[").entrySet()
              .stream().map(e -> "\"" + e.getKey() + "\": " + e.getValue())
              .collect(Collectors.joining(", ", "{", "}"));
    }
    return String.format(
        "{\"wall_s\": %.6f, \"results\": %d, \"failures\": %d, \"state\": \"%s\","
            + " \"taskmanagers\": %s}",
        seconds, XlangBench.count("results"), XlangBench.count("failures"), state, taskManagers);
  }

  /** {@code VmRSS} of process {@code pid} in kB, or -1. */
  static long rssKb(long pid) {
    try {
      for (String line : Files.readAllLines(Paths.get("/proc", Long.toString(pid), "status"))) {
        if (line.startsWith("VmRSS:")) {
          return Long.parseLong(line.replaceAll("[^0-9]", ""));
        }
      }
    } catch (IOException | NumberFormatException e) {
      // gone, or not Linux
    }
    return -1;
  }
}
