package io.crossinfer.launch;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Starts Beam's Prism runner as a local job server from a locally built binary, for running Java
 * pipelines (batch and streaming) with crossinfer transforms on the {@code PortableRunner}. Never
 * downloads anything.
 *
 * <p>The binary is built once with {@code GOBIN=$PWD/.tools/bin go install
 * github.com/apache/beam/sdks/v2/go/cmd/prism@v2.77.0}; {@link #resolveBinary()} finds it through
 * {@code $CROSSINFER_PRISM} or {@code .tools/bin/prism} in the working directory or a parent.
 *
 * <pre>{@code
 * try (PrismJobServer prism = PrismJobServer.start()) {
 *   PortablePipelineOptions options = prism.pipelineOptions(); // PortableRunner, LOOPBACK
 *   options.as(StreamingOptions.class).setStreaming(true);     // for a streaming pipeline
 *   Pipeline p = Pipeline.create(options);
 *   ...
 * }
 * }</pre>
 *
 * <p>{@link #close()} stops prism.
 */
public final class PrismJobServer extends LocalJobServer {
  /** Environment variable naming the prism binary. */
  public static final String ENV = "CROSSINFER_PRISM";

  private PrismJobServer(ManagedProcess process, int port) {
    super(process, port);
  }

  /**
   * The prism binary: {@code $CROSSINFER_PRISM}, else {@code .tools/bin/prism} in the working
   * directory or a parent, else null.
   */
  public static @Nullable Path resolveBinary() {
    String fromEnv = System.getenv(ENV);
    if (fromEnv != null && !fromEnv.isBlank()) {
      return Paths.get(fromEnv);
    }
    return Python.findUpwards(Paths.get(".tools", "bin", "prism"));
  }

  /** Starts prism from {@link #resolveBinary()} on a free port. */
  public static PrismJobServer start() throws IOException {
    Path binary = resolveBinary();
    if (binary == null) {
      throw new IOException(
          "no prism binary: build it with `GOBIN=$PWD/.tools/bin go install"
              + " github.com/apache/beam/sdks/v2/go/cmd/prism@v2.77.0` or set $" + ENV);
    }
    return start(binary, null, Duration.ofMinutes(1));
  }

  /** Starts {@code binary} on a free port, appending its output to {@code logFile} if given. */
  public static PrismJobServer start(Path binary, @Nullable Path logFile, Duration timeout)
      throws IOException {
    if (!Files.isExecutable(binary)) {
      throw new IOException("prism binary " + binary + " does not exist or is not executable");
    }
    // A free port chosen here may in principle be taken before prism binds it; prism then exits
    // and start() reports it with prism's output.
    int port = freePort();
    List<String> command =
        List.of(
            binary.toString(),
            "--job_port=" + port,
            "--serve_http=false",
            "--log_level=warn");
    ManagedProcess process = ManagedProcess.start("prism", command, Map.of(), null, logFile);
    return process.readyOrStopped(
        "prism",
        () -> {
          process.awaitPort("localhost", port, timeout);
          return new PrismJobServer(process, port);
        });
  }

  static int freePort() throws IOException {
    try (ServerSocket socket = new ServerSocket(0)) {
      socket.setReuseAddress(true);
      return socket.getLocalPort();
    }
  }
}
