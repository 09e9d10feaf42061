package io.crossinfer.launch;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Starts Beam's Python portable job server ({@code python -m
 * apache_beam.runners.portability.local_job_service_main}) for running Java pipelines with
 * crossinfer transforms on the {@code PortableRunner}, and stops it on {@link #close()}.
 *
 * <pre>{@code
 * try (PythonJobServer jobServer = PythonJobServer.start()) {
 *   Pipeline p = Pipeline.create(jobServer.pipelineOptions()); // PortableRunner, LOOPBACK
 *   ...
 *   p.run().waitUntilFinish();
 * }
 * }</pre>
 */
public final class PythonJobServer extends LocalJobServer {
  private final Path stagingDir;

  private PythonJobServer(ManagedProcess process, int port, Path stagingDir) {
    super(process, port);
    this.stagingDir = stagingDir;
  }

  /** Starts a job server from {@link Python#resolve()} on a free port. */
  public static PythonJobServer start() throws IOException {
    return start(Python.resolve(), null, Duration.ofMinutes(2));
  }

  /**
   * Starts a job server from {@code python} on a free port, appending its output to {@code
   * logFile} when given.
   */
  public static PythonJobServer start(Path python, @Nullable Path logFile, Duration timeout)
      throws IOException {
    Path dir = Files.createTempDirectory("crossinfer-job-server");
    Path portFile = dir.resolve("port");
    Path staging = dir.resolve("staging");
    List<String> command =
        List.of(
            python.toString(),
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            "0",
            "--port_file",
            portFile.toString(),
            "--staging_dir",
            staging.toString());
    ManagedProcess process =
        ManagedProcess.start(
            "Beam Python job server", command, Python.childEnvironment(python), null, logFile);
    return process.readyOrStopped(
        "the job server",
        () -> {
          int port =
              process.await(
                  () -> readPort(portFile), "the job server to write its port", timeout);
          process.awaitPort("localhost", port, timeout);
          return new PythonJobServer(process, port, dir);
        });
  }

  private static @Nullable Integer readPort(Path portFile) {
    try {
      if (!Files.isRegularFile(portFile)) {
        return null;
      }
      String text = Files.readString(portFile).strip();
      return text.isEmpty() ? null : Integer.valueOf(text);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    } catch (NumberFormatException e) {
      return null;
    }
  }

  /** Stops the job server and deletes its staging directory. */
  @Override
  public void close() {
    super.close();
    deleteRecursively(stagingDir);
  }

  static void deleteRecursively(Path dir) {
    if (!Files.exists(dir)) {
      return;
    }
    try (var paths = Files.walk(dir)) {
      paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException e) {
      // Best effort: a temp directory left behind is harmless.
    }
  }
}
