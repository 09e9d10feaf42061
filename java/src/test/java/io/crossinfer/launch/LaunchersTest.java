package io.crossinfer.launch;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.List;
import java.util.regex.Matcher;
import org.junit.Test;

/** The launchers' command lines and failure reports (no Python needed). */
public class LaunchersTest {
  @Test
  public void expansionServiceCommandFollowsTheDocumentedCli() {
    List<String> command =
        ExpansionServiceLauncher.builder()
            .python(Paths.get("/venv/bin/python"))
            .modelRoots("/models", "gs://bucket/models")
            .allowClasses("mycompany.models:*")
            .command();
    assertEquals(
        List.of(
            "/venv/bin/python", "-m", "crossinfer.expansion", "--port", "0",
            "--start-worker-pool", "--model-root", "/models", "--model-root",
            "gs://bucket/models", "--allow-class", "mycompany.models:*"),
        command);
    List<String> external =
        ExpansionServiceLauncher.builder()
            .python(Paths.get("python3"))
            .port(8097)
            .bind("0.0.0.0")
            .externalWorkerPool("localhost:50000")
            .command();
    assertEquals(
        List.of(
            "python3", "-m", "crossinfer.expansion", "--port", "8097", "--bind", "0.0.0.0",
            "--environment", "external", "--environment-config", "localhost:50000"),
        external);
  }

  @Test
  public void readyLineGivesTheAddress() {
    Matcher m =
        ExpansionServiceLauncher.READY.matcher(
            "crossinfer expansion service listening on 127.0.0.1:41233");
    assertTrue(m.find());
    assertEquals("127.0.0.1", m.group(1));
    assertEquals("41233", m.group(2));
  }

  @Test
  public void aServiceThatExitsBeforeItIsReadyFailsWithItsOutput() throws Exception {
    Path fake = Files.createTempFile("fake-python", ".sh");
    Files.writeString(fake, "#!/bin/sh\necho \"no module named crossinfer\" >&2\nexit 3\n");
    fake.toFile().setExecutable(true);
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class,
            () ->
                ExpansionServiceLauncher.builder()
                    .python(fake)
                    .startupTimeout(Duration.ofSeconds(20))
                    .start());
    assertTrue(e.getMessage(), e.getMessage().contains("exited with code 3 before it was ready"));
    assertTrue(e.getMessage(), e.getMessage().contains("no module named crossinfer"));
    assertTrue(e.getMessage(), e.getMessage().contains("cannot import crossinfer. Set"
        + " $CROSSINFER_PYTHON to the interpreter of an environment with crossinfer installed"));
  }

  @Test
  public void aServiceThatNeverGetsReadyTimesOutAndIsStopped() throws Exception {
    Path fake = Files.createTempFile("slow-python", ".sh");
    Files.writeString(fake, "#!/bin/sh\necho starting\nexec sleep 60\n");
    fake.toFile().setExecutable(true);
    long start = System.nanoTime();
    IllegalStateException e =
        assertThrows(
            IllegalStateException.class,
            () ->
                ExpansionServiceLauncher.builder()
                    .python(fake)
                    .startupTimeout(Duration.ofSeconds(2))
                    .start());
    assertTrue(e.getMessage(), e.getMessage().contains("did not print a line matching"));
    assertTrue(e.getMessage(), e.getMessage().contains("starting"));
    assertTrue(Duration.ofNanos(System.nanoTime() - start).getSeconds() < 30);
  }

  @Test
  public void childEnvironmentPutsTheInterpreterFirstOnThePath() {
    String path = Python.childEnvironment(Paths.get("/opt/venv/bin/python")).get("PATH");
    assertTrue(path, path.startsWith("/opt/venv/bin:"));
  }
}
