package io.crossinfer.launch;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import org.junit.Test;

/** The Flink launchers' configuration and command lines (no cluster started; FlinkIT starts one). */
public class FlinkLaunchersTest {
  @Test
  public void everyTaskManagerResourceIsSetExplicitly() {
    Map<String, String> config = FlinkCluster.config(6123, 8081, 2, Paths.get("/tmp/x"));
    // What Flink needs to start a TaskManager without its scripts: CPU, slots and every memory
    // part (TaskExecutorProcessUtils refuses a TaskManager whose memory it cannot derive).
    for (String key :
        List.of("taskmanager.cpu.cores", "taskmanager.numberOfTaskSlots",
            "taskmanager.memory.framework.heap.size", "taskmanager.memory.task.heap.size",
            "taskmanager.memory.framework.off-heap.size", "taskmanager.memory.task.off-heap.size",
            "taskmanager.memory.managed.size", "taskmanager.memory.network.min",
            "taskmanager.memory.network.max", "taskmanager.memory.jvm-metaspace.size",
            "taskmanager.memory.jvm-overhead.min", "taskmanager.memory.jvm-overhead.max")) {
      assertTrue(key, config.containsKey(key));
    }
    assertEquals("1", config.get("taskmanager.numberOfTaskSlots"));
    assertEquals("parent-first", config.get("classloader.resolve-order"));
    assertEquals("2", config.get("parallelism.default"));
    assertEquals("8081", config.get("rest.port"));
    assertEquals("6123", config.get("jobmanager.rpc.port"));
    for (String bind :
        List.of("jobmanager.rpc.address", "jobmanager.bind-host", "rest.address",
            "rest.bind-address", "taskmanager.host", "taskmanager.bind-host")) {
      assertEquals(bind, "localhost", config.get(bind));
    }
  }

  @Test
  public void jvmLimitsMatchTheConfiguredMemory() {
    // heap = framework + task heap; direct = framework + task off-heap + network
    assertEquals(
        List.of("-Xms192m", "-Xmx192m", "-XX:MaxDirectMemorySize=256m",
            "-XX:MaxMetaspaceSize=192m"),
        FlinkCluster.taskManagerJvmOptions());
    assertEquals(
        List.of("-Xms256m", "-Xmx256m", "-XX:MaxDirectMemorySize=64m",
            "-XX:MaxMetaspaceSize=192m"),
        FlinkCluster.jobManagerJvmOptions());
  }

  @Test
  public void jobServerCommandSubmitsToTheClusterWithItsConfig() {
    List<String> command =
        FlinkJobServer.command(Paths.get("/lib"), "localhost:8081", Paths.get("/conf"),
            Paths.get("/work"));
    assertEquals("/lib/*", command.get(command.indexOf("-cp") + 1));
    assertEquals(FlinkJobServer.MAIN, command.get(command.indexOf("-cp") + 2));
    String args = String.join(" ", command);
    assertTrue(args, args.endsWith("--job-host localhost --job-port 0 --artifact-port 0"
        + " --expansion-port -1 --artifacts-dir /work/artifacts --flink-master localhost:8081"
        + " --flink-conf-dir /conf"));
    assertTrue(args, args.contains("--add-opens=java.base/java.nio=ALL-UNNAMED"));
  }

  @Test
  public void readyLineGivesTheJobPort() {
    Matcher m =
        FlinkJobServer.READY.matcher(
            "07:08:30.617 [main] INFO org.apache.beam.runners.jobsubmission.JobServerDriver -"
                + " JobService started on localhost:43855");
    assertTrue(m.find());
    assertEquals("43855", m.group(2));
  }

  @Test
  public void aClusterWithoutTheJarsSaysHowToGetThem() throws Exception {
    Path empty = Files.createTempDirectory("no-flink-jars");
    IOException e =
        assertThrows(IOException.class, () -> FlinkCluster.builder().lib(empty).start());
    assertTrue(e.getMessage(), e.getMessage().contains("java/scripts/build-flink.sh"));
    e =
        assertThrows(
            IOException.class,
            () ->
                FlinkJobServer.start("localhost:8081", null, empty, null,
                    java.time.Duration.ofSeconds(5)));
    assertTrue(e.getMessage(), e.getMessage().contains("beam-runners-flink-1.19-2.62.0.jar"));
  }

  @Test
  public void taskManagerCountIsBounded() {
    assertThrows(IllegalArgumentException.class, () -> FlinkCluster.builder().taskManagers(0));
    assertThrows(IllegalArgumentException.class, () -> FlinkCluster.builder().taskManagers(9));
  }
}
