package io.crossinfer.launch;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * A standalone Flink 1.19 session cluster on this machine - one JobManager and N TaskManagers
 * with one slot each, every one its own JVM - started from the jars of Beam's Flink runner (no
 * {@code flink-dist}, no Flink scripts), for running portable Beam pipelines through {@link
 * FlinkJobServer}. {@link #close()} stops every JVM.
 *
 * <pre>{@code
 * try (FlinkCluster cluster = FlinkCluster.builder().taskManagers(2).start();
 *     FlinkJobServer jobServer = FlinkJobServer.start(cluster, null)) {
 *   Pipeline p = Pipeline.create(jobServer.pipelineOptions()); // PortableRunner, LOOPBACK
 *   ...
 *   cluster.rest("/jobs/overview"); // Flink's REST API: jobs, vertices, TaskManagers
 * }
 * }</pre>
 *
 * <p>Without Flink's start scripts nothing derives the TaskManagers' resources, so the config
 * sets each TaskManager's CPU and every part of its memory explicitly ({@link
 * #TASK_MANAGER_CONFIG}), and this class passes the matching {@code -Xmx}, direct-memory and
 * metaspace limits to each JVM. Every port binds {@code localhost}; class loading is
 * parent-first (Beam's runner is on the cluster's own classpath, jobs bring no jars). The jars
 * come from {@code java/scripts/build-flink.sh} ({@code .tools/flink/lib}, or {@code
 * $CROSSINFER_FLINK_LIB}).
 */
public final class FlinkCluster implements AutoCloseable {
  /** The JobManager's main class (what Flink's {@code start-cluster.sh} runs). */
  static final String JOB_MANAGER_MAIN =
      "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint";

  /** A TaskManager's main class (what Flink's {@code taskmanager.sh} runs). */
  static final String TASK_MANAGER_MAIN = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner";

  /**
   * Each TaskManager: one slot, one core, and every memory part set (Flink refuses to start a
   * TaskManager whose memory it cannot derive, and only its scripts derive it from a total).
   * Small on purpose: the Python workers, not the TaskManagers, run the models; a TaskManager
   * moves bytes between Flink's network stack and the workers' gRPC streams.
   */
  public static final Map<String, String> TASK_MANAGER_CONFIG =
      ordered(
          "taskmanager.numberOfTaskSlots", "1",
          "taskmanager.cpu.cores", "1",
          "taskmanager.memory.framework.heap.size", "64m",
          // Elements in flight between the TaskManager and the SDK workers live here and in
          // task off-heap: enough for 200,000 rows of 32 floats in one bundle (bench.flink);
          // 400,000 ran out of heap, and with 384m here out of direct memory.
          "taskmanager.memory.task.heap.size", "128m",
          "taskmanager.memory.framework.off-heap.size", "64m",
          // Beam's gRPC streams to the SDK workers use direct buffers.
          "taskmanager.memory.task.off-heap.size", "128m",
          // Flink's sort buffers for GroupByKey in batch.
          "taskmanager.memory.managed.size", "64m",
          "taskmanager.memory.network.min", "64m",
          "taskmanager.memory.network.max", "64m",
          // Each blocking exchange of a batch job reserves this many 32 KiB network buffers
          // (Flink's default, 512, is the whole 64m above for 4 exchanges; a crossinfer
          // pipeline has a few per transform).
          "taskmanager.network.sort-shuffle.min-buffers", "64",
          "taskmanager.memory.jvm-metaspace.size", "192m",
          "taskmanager.memory.jvm-overhead.min", "64m",
          "taskmanager.memory.jvm-overhead.max", "64m");

  /** The JobManager's memory (it schedules; it runs no user code). */
  public static final Map<String, String> JOB_MANAGER_CONFIG =
      ordered(
          "jobmanager.memory.heap.size", "256m",
          "jobmanager.memory.off-heap.size", "64m",
          "jobmanager.memory.jvm-metaspace.size", "192m",
          "jobmanager.memory.jvm-overhead.min", "64m",
          "jobmanager.memory.jvm-overhead.max", "64m");

  private static final ObjectMapper MAPPER = new ObjectMapper();

  private final Path lib;
  private final Path workDirectory;
  private final boolean ownsWorkDirectory;
  private final int restPort;
  private final int taskManagers;
  private final ManagedProcess jobManager;
  private final List<ManagedProcess> taskManagerProcesses;
  private final HttpClient http =
      HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

  private FlinkCluster(
      Path lib,
      Path workDirectory,
      boolean ownsWorkDirectory,
      int restPort,
      int taskManagers,
      ManagedProcess jobManager,
      List<ManagedProcess> taskManagerProcesses) {
    this.lib = lib;
    this.workDirectory = workDirectory;
    this.ownsWorkDirectory = ownsWorkDirectory;
    this.restPort = restPort;
    this.taskManagers = taskManagers;
    this.jobManager = jobManager;
    this.taskManagerProcesses = taskManagerProcesses;
  }

  /** A builder with the defaults: 2 TaskManagers, jars from {@code .tools/flink/lib}. */
  public static Builder builder() {
    return new Builder();
  }

  /**
   * The directory of the jars: {@code $CROSSINFER_FLINK_LIB}, else {@code .tools/flink/lib} in
   * the working directory or a parent ({@code java/scripts/build-flink.sh} puts them there),
   * else null.
   */
  public static @Nullable Path resolveLib() {
    return FlinkRuntime.resolveLib();
  }

  /** {@code localhost:port} of the JobManager's REST endpoint, for {@code --flink-master}. */
  public String restAddress() {
    return "localhost:" + restPort;
  }

  /** The directory of the jars the cluster runs from. */
  public Path lib() {
    return lib;
  }

  /** The directory of the cluster's {@code config.yaml}, for {@code --flink-conf-dir}. */
  public Path configDirectory() {
    return workDirectory.resolve("conf");
  }

  /** The number of TaskManagers, each with one slot: the default parallelism of a job. */
  public int parallelism() {
    return taskManagers;
  }

  /** The TaskManagers' resource ids, {@code tm1} to {@code tmN}. */
  public List<String> taskManagerIds() {
    List<String> ids = new ArrayList<>();
    for (int i = 1; i <= taskManagers; i++) {
      ids.add("tm" + i);
    }
    return ids;
  }

  /**
   * The process id of each JVM: {@code jobmanager}, then {@code tm1}..{@code tmN} (to measure
   * their memory, e.g. {@code VmRSS} in {@code /proc/PID/status}).
   */
  public Map<String, Long> processIds() {
    Map<String, Long> pids = new LinkedHashMap<>();
    pids.put("jobmanager", jobManager.pid());
    List<String> ids = taskManagerIds();
    for (int i = 0; i < ids.size(); i++) {
      pids.put(ids.get(i), taskManagerProcesses.get(i).pid());
    }
    return pids;
  }

  /**
   * GETs {@code path} (e.g. {@code /jobs/overview}, {@code /jobs/ID/vertices/VID/taskmanagers})
   * from Flink's REST API and parses the JSON answer.
   *
   * @throws IOException if the request fails or the answer is not 200
   */
  public JsonNode rest(String path) throws IOException {
    HttpRequest request =
        HttpRequest.newBuilder(URI.create("http://" + restAddress() + path))
            .timeout(Duration.ofSeconds(10))
            .GET()
            .build();
    HttpResponse<String> response;
    try {
      response = http.send(request, HttpResponse.BodyHandlers.ofString());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted: GET " + path, e);
    }
    if (response.statusCode() != 200) {
      throw new IOException(
          "GET " + path + " answered " + response.statusCode() + ": " + response.body());
    }
    return MAPPER.readTree(response.body());
  }

  /**
   * The id of the most recently started job named {@code jobName} (Beam's Flink runner names a
   * job after the pipeline's {@code --jobName}).
   *
   * @throws IOException if the REST API fails or knows no such job
   */
  public String jobId(String jobName) throws IOException {
    String id = null;
    long latest = Long.MIN_VALUE;
    for (JsonNode job : rest("/jobs/overview").get("jobs")) {
      if (job.get("name").asText().equals(jobName) && job.get("start-time").asLong() > latest) {
        latest = job.get("start-time").asLong();
        id = job.get("jid").asText();
      }
    }
    if (id == null) {
      throw new IOException("the Flink cluster at " + restAddress() + " ran no job named '"
          + jobName + "'");
    }
    return id;
  }

  /**
   * Which TaskManagers ran the job's steps whose name contains {@code step} (Flink names a vertex
   * after the Beam transforms fused into it, e.g. {@code RunInference[digits_ab]}): per
   * TaskManager id, the records those vertices' subtasks there read, from Flink's REST API
   * ({@code /jobs/ID/vertices/VID/taskmanagers}). A TaskManager that ran a subtask of such a
   * vertex is listed even if it read nothing.
   *
   * @throws IOException if the REST API fails or no vertex of the job matches
   */
  public Map<String, Long> recordsReadByTaskManager(String jobId, String step) throws IOException {
    Map<String, Long> records = new java.util.TreeMap<>();
    boolean matched = false;
    List<String> names = new ArrayList<>();
    for (JsonNode vertex : rest("/jobs/" + jobId).get("vertices")) {
      names.add(vertex.get("name").asText());
      if (!vertex.get("name").asText().contains(step)) {
        continue;
      }
      matched = true;
      JsonNode tms =
          rest("/jobs/" + jobId + "/vertices/" + vertex.get("id").asText() + "/taskmanagers");
      for (JsonNode tm : tms.get("taskmanagers")) {
        records.merge(tm.get("taskmanager-id").asText(),
            tm.get("metrics").get("read-records").asLong(), Long::sum);
      }
    }
    if (!matched) {
      throw new IOException(
          "job " + jobId + " has no step named like '" + step + "'; its steps: " + names);
    }
    return records;
  }

  /** The JobManager's and the TaskManagers' last output lines, for diagnostics. */
  public String outputTail() {
    StringBuilder out = new StringBuilder("jobmanager" + jobManager.outputTail());
    List<String> ids = taskManagerIds();
    for (int i = 0; i < ids.size(); i++) {
      out.append("\n").append(ids.get(i)).append(taskManagerProcesses.get(i).outputTail());
    }
    return out.toString();
  }

  /** Stops the TaskManagers, then the JobManager; deletes the work directory if it made it. */
  @Override
  public void close() {
    for (ManagedProcess tm : taskManagerProcesses) {
      tm.close();
    }
    jobManager.close();
    if (ownsWorkDirectory) {
      PythonJobServer.deleteRecursively(workDirectory);
    }
  }

  /** The {@code -X} limits Flink's scripts would pass a TaskManager for {@link #TASK_MANAGER_CONFIG}. */
  static List<String> taskManagerJvmOptions() {
    Map<String, String> c = TASK_MANAGER_CONFIG;
    long heap =
        mebibytes(c.get("taskmanager.memory.framework.heap.size"))
            + mebibytes(c.get("taskmanager.memory.task.heap.size"));
    long direct =
        mebibytes(c.get("taskmanager.memory.framework.off-heap.size"))
            + mebibytes(c.get("taskmanager.memory.task.off-heap.size"))
            + mebibytes(c.get("taskmanager.memory.network.max"));
    long metaspace = mebibytes(c.get("taskmanager.memory.jvm-metaspace.size"));
    return List.of("-Xms" + heap + "m", "-Xmx" + heap + "m",
        "-XX:MaxDirectMemorySize=" + direct + "m", "-XX:MaxMetaspaceSize=" + metaspace + "m");
  }

  /** The {@code -X} limits Flink's scripts would pass the JobManager for {@link #JOB_MANAGER_CONFIG}. */
  static List<String> jobManagerJvmOptions() {
    Map<String, String> c = JOB_MANAGER_CONFIG;
    long heap = mebibytes(c.get("jobmanager.memory.heap.size"));
    return List.of("-Xms" + heap + "m", "-Xmx" + heap + "m",
        "-XX:MaxDirectMemorySize=" + mebibytes(c.get("jobmanager.memory.off-heap.size")) + "m",
        "-XX:MaxMetaspaceSize=" + mebibytes(c.get("jobmanager.memory.jvm-metaspace.size")) + "m");
  }

  /** The cluster's {@code config.yaml}: flat {@code key: value} lines. */
  static Map<String, String> config(int rpcPort, int restPort, int taskManagers, Path tmp) {
    Map<String, String> config = new LinkedHashMap<>();
    // Everything on loopback: nothing of this cluster is reachable from other hosts.
    config.put("jobmanager.rpc.address", "localhost");
    config.put("jobmanager.rpc.port", Integer.toString(rpcPort));
    config.put("jobmanager.bind-host", "localhost");
    config.put("rest.address", "localhost");
    config.put("rest.bind-address", "localhost");
    config.put("rest.port", Integer.toString(restPort));
    config.put("taskmanager.host", "localhost");
    config.put("taskmanager.bind-host", "localhost");
    // Beam's runner is on the cluster's classpath and jobs bring no jars: resolving classes
    // child-first would load a second copy of Beam per job.
    config.put("classloader.resolve-order", "parent-first");
    // A job uses every slot unless it asks otherwise; the Flink job server reads this file
    // (--flink-conf-dir), so Beam's jobs get it too.
    config.put("parallelism.default", Integer.toString(taskManagers));
    // A failed job fails at once, with its error, instead of restarting.
    config.put("restart-strategy.type", "none");
    config.put("io.tmp.dirs", tmp.toString());
    config.putAll(JOB_MANAGER_CONFIG);
    config.putAll(TASK_MANAGER_CONFIG);
    return config;
  }

  static long mebibytes(String size) {
    if (!size.endsWith("m")) {
      throw new IllegalArgumentException("expected a size in mebibytes like 64m, got " + size);
    }
    return Long.parseLong(size.substring(0, size.length() - 1));
  }

  private static Map<String, String> ordered(String... keysAndValues) {
    Map<String, String> map = new LinkedHashMap<>();
    for (int i = 0; i < keysAndValues.length; i += 2) {
      map.put(keysAndValues[i], keysAndValues[i + 1]);
    }
    return java.util.Collections.unmodifiableMap(map);
  }

  /** Settings for {@link FlinkCluster}; {@link #start()} launches. */
  public static final class Builder {
    private int taskManagers = 2;
    private @Nullable Path lib;
    private @Nullable Path workDirectory;
    private Duration startupTimeout = Duration.ofMinutes(2);

    private Builder() {}

    /** The number of TaskManagers, 1 to 8 (default 2), each with one slot and one core. */
    public Builder taskManagers(int n) {
      if (n < 1 || n > 8) {
        throw new IllegalArgumentException("taskManagers: expected 1..8, got " + n);
      }
      this.taskManagers = n;
      return this;
    }

    /** The directory of the jars (default {@code .tools/flink/lib} or {@code $CROSSINFER_FLINK_LIB}). */
    public Builder lib(Path lib) {
      this.lib = lib;
      return this;
    }

    /**
     * Where the config, temporary files and each JVM's log ({@code jobmanager.log}, {@code
     * tmN.log}) go; kept after {@link #close()}. By default a new temporary directory, deleted
     * on {@link #close()}.
     */
    public Builder workDirectory(Path dir) {
      this.workDirectory = dir;
      return this;
    }

    /** How long to wait until every TaskManager has registered (default 2 minutes). */
    public Builder startupTimeout(Duration timeout) {
      this.startupTimeout = timeout;
      return this;
    }

    /**
     * Starts the JobManager and the TaskManagers and waits until the REST API lists every
     * TaskManager.
     *
     * @throws IOException if there are no jars or a JVM cannot be started
     * @throws IllegalStateException if a JVM exits or the timeout passes first, with its output
     */
    public FlinkCluster start() throws IOException {
      Path jars = lib != null ? lib : FlinkRuntime.requireLib();
      FlinkRuntime.checkLib(jars);
      boolean owns = workDirectory == null;
      Path dir =
          owns ? Files.createTempDirectory("crossinfer-flink") : Files.createDirectories(workDirectory);
      Path conf = Files.createDirectories(dir.resolve("conf"));
      Path tmp = Files.createDirectories(dir.resolve("tmp"));
      // Free ports chosen here may in principle be taken before the JobManager binds them; it
      // then exits and start() reports it with its output.
      int rpcPort = PrismJobServer.freePort();
      int restPort = PrismJobServer.freePort();
      StringBuilder yaml = new StringBuilder("# written by io.crossinfer.launch.FlinkCluster\n");
      config(rpcPort, restPort, taskManagers, tmp)
          .forEach((k, v) -> yaml.append(k).append(": ").append(v).append('\n'));
      Files.writeString(conf.resolve("config.yaml"), yaml);

      List<ManagedProcess> started = new ArrayList<>();
      try {
        List<String> jmCommand =
            new ArrayList<>(
                FlinkRuntime.javaCommand(jars, jobManagerJvmOptions(), JOB_MANAGER_MAIN));
        jmCommand.addAll(List.of("--configDir", conf.toString()));
        ManagedProcess jm =
            ManagedProcess.start(
                "Flink JobManager", jmCommand, Map.of(), dir, dir.resolve("jobmanager.log"));
        started.add(jm);
        // The TaskManagers start alongside; they retry until the JobManager answers.
        List<ManagedProcess> tms = new ArrayList<>();
        for (int i = 1; i <= taskManagers; i++) {
          List<String> command =
              new ArrayList<>(
                  FlinkRuntime.javaCommand(jars, taskManagerJvmOptions(), TASK_MANAGER_MAIN));
          command.addAll(List.of("--configDir", conf.toString(), "-Dtaskmanager.resource-id=tm" + i));
          ManagedProcess tm =
              ManagedProcess.start(
                  "Flink TaskManager tm" + i, command, Map.of(), dir, dir.resolve("tm" + i + ".log"));
          started.add(tm);
          tms.add(tm);
        }
        FlinkCluster cluster = new FlinkCluster(jars, dir, owns, restPort, taskManagers, jm, tms);
        return jm.readyOrStopped(
            "the Flink cluster",
            () -> {
              jm.await(() -> cluster.registered(tms), "every TaskManager to register",
                  startupTimeout);
              return cluster;
            });
      } catch (IOException | RuntimeException e) {
        for (ManagedProcess p : started) {
          p.close();
        }
        throw e;
      }
    }
  }

  /** TRUE once the REST API lists every TaskManager; fails if one of them exited. */
  private @Nullable Boolean registered(List<ManagedProcess> tms) {
    for (int i = 0; i < tms.size(); i++) {
      if (!tms.get(i).isAlive()) {
        throw new IllegalStateException(
            "Flink TaskManager tm" + (i + 1) + " exited before it registered"
                + tms.get(i).outputTail());
      }
    }
    try {
      Set<String> ids = new TreeSet<>();
      rest("/taskmanagers").get("taskmanagers").forEach(tm -> ids.add(tm.get("id").asText()));
      return ids.containsAll(taskManagerIds()) ? Boolean.TRUE : null;
    } catch (IOException e) {
      return null; // not up yet
    }
  }
}
