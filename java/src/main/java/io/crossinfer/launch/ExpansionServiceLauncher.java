package io.crossinfer.launch;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Starts a local crossinfer expansion service ({@code python -m crossinfer.expansion}) for
 * development and tests, and stops it (with its worker pool) on {@link #close()}.
 *
 * <p>The service runs from a Python environment with crossinfer installed: by default {@code
 * $CROSSINFER_PYTHON}, else the first {@code .venv/bin/python} found in the JVM's working
 * directory or one of its parents, else {@code python3} from the PATH (see {@link Python}); a
 * Python without crossinfer fails {@link Builder#start()} with a message naming {@code
 * CROSSINFER_PYTHON}. It binds to
 * loopback on a free port and, unless told otherwise, starts an external worker pool so the
 * Python side of a pipeline runs without Docker.
 *
 * <pre>{@code
 * try (ExpansionServiceLauncher service = ExpansionServiceLauncher.builder()
 *         .modelRoots("/models")
 *         .start()) {
 *   Pipeline p = Pipeline.create(options);
 *   InferenceResult result = p.apply(input)
 *       .apply(abTest.withExpansionService(service.address()));
 *   p.run().waitUntilFinish();
 * }
 * }</pre>
 *
 * <p>In production, run the service yourself (or its container) and pass its address to {@code
 * withExpansionService(...)} instead.
 */
public final class ExpansionServiceLauncher implements AutoCloseable {
  /** The line the service prints when it is ready. */
  static final Pattern READY =
      Pattern.compile("crossinfer expansion service listening on (\\S+):(\\d+)\\s*$");

  private final ManagedProcess process;
  private final String address;
  private final int port;

  private ExpansionServiceLauncher(ManagedProcess process, String host, int port) {
    this.process = process;
    this.port = port;
    this.address = host + ":" + port;
  }

  /** A builder with the defaults: the resolved Python, a free port, a worker pool. */
  public static Builder builder() {
    return new Builder();
  }

  /** {@code host:port} to pass to {@code withExpansionService(...)}. */
  public String address() {
    return address;
  }

  /** The port the service listens on. */
  public int port() {
    return port;
  }

  /** Whether the service process is still running. */
  public boolean isAlive() {
    return process.isAlive();
  }

  /** The service's last output lines, for diagnostics. */
  public String outputTail() {
    return process.outputTail();
  }

  /** Stops the service and every process it started (the worker pool and its workers). */
  @Override
  public void close() {
    process.close();
  }

  /** Settings for {@link ExpansionServiceLauncher}; {@link #start()} launches. */
  public static final class Builder {
    private @Nullable Path python;
    private int port;
    private @Nullable String bind;
    private boolean startWorkerPool = true;
    private @Nullable String environmentConfig;
    private final List<String> modelRoots = new ArrayList<>();
    private final List<String> allowClasses = new ArrayList<>();
    private final List<String> extraArgs = new ArrayList<>();
    private @Nullable Path workingDirectory;
    private @Nullable Path logFile;
    private Duration startupTimeout = Duration.ofMinutes(3);

    private Builder() {}

    /** The Python interpreter with crossinfer installed (default: {@link Python#resolve()}). */
    public Builder python(Path python) {
      this.python = python;
      return this;
    }

    /** The port to listen on (default 0: a free port chosen by the service). */
    public Builder port(int port) {
      if (port < 0 || port > 65535) {
        throw new IllegalArgumentException("port: expected 0..65535, got " + port);
      }
      this.port = port;
      return this;
    }

    /** The address to bind (the service's default is loopback). */
    public Builder bind(String bind) {
      this.bind = bind;
      return this;
    }

    /**
     * Whether the service starts its own Python worker pool (default true). Turn off to use
     * {@link #externalWorkerPool(String)} or the service's own environment flags.
     */
    public Builder startWorkerPool(boolean start) {
      this.startWorkerPool = start;
      return this;
    }

    /** Use a running external worker pool at {@code hostPort} for the Python workers. */
    public Builder externalWorkerPool(String hostPort) {
      this.environmentConfig = hostPort;
      this.startWorkerPool = false;
      return this;
    }

    /** Directories or URI prefixes the service may load models from ({@code --model-root}). */
    public Builder modelRoots(String... roots) {
      modelRoots.addAll(List.of(roots));
      return this;
    }

    /** Import-path patterns of classes specs may name ({@code --allow-class}). */
    public Builder allowClasses(String... patterns) {
      allowClasses.addAll(List.of(patterns));
      return this;
    }

    /** More command-line arguments for {@code python -m crossinfer.expansion}. */
    public Builder extraArgs(String... args) {
      extraArgs.addAll(List.of(args));
      return this;
    }

    /** The service's working directory (relative model paths resolve against it). */
    public Builder workingDirectory(Path dir) {
      this.workingDirectory = dir;
      return this;
    }

    /** Append the service's output to this file (by default it is only kept in memory). */
    public Builder logFile(Path file) {
      this.logFile = file;
      return this;
    }

    /** How long to wait for the service to be ready (default 3 minutes). */
    public Builder startupTimeout(Duration timeout) {
      this.startupTimeout = timeout;
      return this;
    }

    /** The command line that {@link #start()} runs. */
    public List<String> command() {
      Path py = python != null ? python : Python.resolve();
      List<String> cmd = new ArrayList<>(List.of(py.toString(), "-m", "crossinfer.expansion"));
      cmd.add("--port");
      cmd.add(Integer.toString(port));
      if (bind != null) {
        cmd.add("--bind");
        cmd.add(bind);
      }
      if (startWorkerPool) {
        cmd.add("--start-worker-pool");
      } else if (environmentConfig != null) {
        cmd.addAll(List.of("--environment", "external", "--environment-config",
            environmentConfig));
      }
      for (String root : modelRoots) {
        cmd.add("--model-root");
        cmd.add(root);
      }
      for (String pattern : allowClasses) {
        cmd.add("--allow-class");
        cmd.add(pattern);
      }
      cmd.addAll(extraArgs);
      return cmd;
    }

    /**
     * Starts the service and waits until it prints that it is listening.
     *
     * @throws IOException if the interpreter cannot be started
     * @throws IllegalStateException if the service exits or times out before it is ready, with
     *     its last output lines
     */
    public ExpansionServiceLauncher start() throws IOException {
      Path py = python != null ? python : Python.resolve();
      Map<String, String> env = Python.childEnvironment(py);
      ManagedProcess process =
          ManagedProcess.start(
              "crossinfer expansion service", command(), env, workingDirectory, logFile);
      try {
        return process.readyOrStopped(
            "the expansion service",
            () -> {
              Matcher ready = process.awaitLine(READY, startupTimeout);
              String host = ready.group(1);
              if (host.equals("0.0.0.0") || host.equals("::") || host.equals("[::]")) {
                host = "localhost";
              }
              return new ExpansionServiceLauncher(
                  process, host, Integer.parseInt(ready.group(2)));
            });
      } catch (IllegalStateException e) {
        String message = String.valueOf(e.getMessage());
        if (message.toLowerCase(java.util.Locale.ROOT).contains("no module named")) {
          throw new IllegalStateException(message + "\n" + Python.withoutCrossinfer(py), e);
        }
        throw e;
      }
    }
  }
}
