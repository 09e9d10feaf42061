package io.crossinfer.launch;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Starts Beam's Flink job server (Beam {@value FlinkRuntime#BEAM_VERSION}, Flink 1.19) as a local
 * child JVM that submits the portable pipelines it receives to a Flink cluster, and stops it on
 * {@link #close()}.
 *
 * <p>The job server is not a published jar here: it runs from the Maven-resolved jars of Beam's
 * Flink runner ({@code java/scripts/build-flink.sh}, {@code .tools/flink/lib}), through {@code
 * io.crossinfer.flink.ClusterJobServer} ({@code java/flink}): Beam's {@code
 * FlinkJobServerDriver}, same flags, except that it does not upload its own classpath (150 MB)
 * to the cluster with every job - the cluster runs from the same jars.
 *
 * <pre>{@code
 * try (FlinkCluster cluster = FlinkCluster.builder().start();
 *     FlinkJobServer jobServer = FlinkJobServer.start(cluster, null)) {
 *   Pipeline p = Pipeline.create(jobServer.pipelineOptions()); // PortableRunner, LOOPBACK
 *   ...
 * }
 * }</pre>
 *
 * <p>Python pipelines use the same endpoint: {@code --runner=PortableRunner
 * --job_endpoint=}{@link #endpoint()}.
 */
public final class FlinkJobServer extends LocalJobServer {
  /** The job server's main class ({@code java/flink}). */
  static final String MAIN = "io.crossinfer.flink.ClusterJobServer";

  /** The line the job server prints once its job service listens. */
  static final Pattern READY = Pattern.compile("JobService started on (\\S+):(\\d+)\\s*$");

  private final Path workDirectory;

  private FlinkJobServer(ManagedProcess process, int port, Path workDirectory) {
    super(process, port);
    this.workDirectory = workDirectory;
  }

  /**
   * Starts a job server that submits to {@code cluster}, with the cluster's config (its default
   * parallelism: every slot) and jars, appending its output to {@code logFile} when given.
   */
  public static FlinkJobServer start(FlinkCluster cluster, @Nullable Path logFile)
      throws IOException {
    return start(cluster.restAddress(), cluster.configDirectory(), cluster.lib(), logFile,
        Duration.ofMinutes(2));
  }

  /**
   * Starts a job server that submits to the Flink cluster whose JobManager's REST endpoint is
   * {@code flinkMaster} ({@code host:port}).
   *
   * @param flinkConfDir a directory with a Flink {@code config.yaml} whose settings apply to
   *     every job (e.g. {@code parallelism.default}), or null
   * @param lib the jars (null: {@code .tools/flink/lib} or {@code $CROSSINFER_FLINK_LIB})
   * @param logFile where to append the job server's output, or null
   * @param timeout how long to wait until it listens
   */
  public static FlinkJobServer start(
      String flinkMaster,
      @Nullable Path flinkConfDir,
      @Nullable Path lib,
      @Nullable Path logFile,
      Duration timeout)
      throws IOException {
    Path jars = lib != null ? lib : FlinkRuntime.requireLib();
    FlinkRuntime.checkLib(jars);
    Path dir = Files.createTempDirectory("crossinfer-flink-job-server");
    ManagedProcess process =
        ManagedProcess.start(
            "Flink job server", command(jars, flinkMaster, flinkConfDir, dir), Map.of(), null,
            logFile);
    return process.readyOrStopped(
        "the Flink job server",
        () ->
            new FlinkJobServer(
                process, Integer.parseInt(process.awaitLine(READY, timeout).group(2)), dir));
  }

  /** The command line {@link #start} runs. */
  static List<String> command(
      Path lib, String flinkMaster, @Nullable Path flinkConfDir, Path workDirectory) {
    List<String> command =
        new ArrayList<>(
            FlinkRuntime.javaCommand(
                lib, List.of("-Xmx256m", "-XX:MaxMetaspaceSize=256m"), MAIN));
    command.addAll(
        List.of(
            "--job-host", "localhost",
            "--job-port", "0",
            "--artifact-port", "0",
            // Beam's Java expansion service inside the job server: crossinfer does not use it.
            "--expansion-port", "-1",
            "--artifacts-dir", workDirectory.resolve("artifacts").toString(),
            "--flink-master", flinkMaster));
    if (flinkConfDir != null) {
      command.addAll(List.of("--flink-conf-dir", flinkConfDir.toString()));
    }
    return command;
  }

  /**
   * How long a TaskManager keeps a job's SDK environments after a stage stops using them: 30 s.
   * Flink runs a batch job's stages one region after another and, without this, closes the
   * environments between them and starts them again; Beam's LOOPBACK Java harness cannot be
   * started twice in one job (the second start fails on an executor the first one's shutdown
   * closed, and the job waits for it forever), and each restart of a Python worker costs seconds.
   */
  public static final int ENVIRONMENT_CACHE_MILLIS = 30_000;

  /**
   * As {@link LocalJobServer#pipelineOptions()}, with {@link #ENVIRONMENT_CACHE_MILLIS}: the
   * PortableRunner, this job endpoint, the Java steps in this JVM ({@code LOOPBACK}).
   */
  @Override
  public PortablePipelineOptions pipelineOptions() {
    PortablePipelineOptions options = super.pipelineOptions();
    options.setEnvironmentCacheMillis(ENVIRONMENT_CACHE_MILLIS);
    return options;
  }

  /** Stops the job server and deletes its staging directory. */
  @Override
  public void close() {
    super.close();
    PythonJobServer.deleteRecursively(workDirectory);
  }
}
