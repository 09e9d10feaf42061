package io.crossinfer.launch;

import org.apache.beam.sdk.options.PortablePipelineOptions;

/**
 * A Beam job server running as a local child process, for running Java pipelines with crossinfer
 * transforms on the {@code PortableRunner}; {@link #close()} stops it.
 *
 * <p>The concrete servers are {@link PrismJobServer}, {@link PythonJobServer} and {@link
 * FlinkJobServer}; each is started with its own {@code start(...)} factory.
 */
public abstract class LocalJobServer implements AutoCloseable {
  private final ManagedProcess process;
  private final int port;

  /** Only this package's job servers extend this class. */
  LocalJobServer(ManagedProcess process, int port) {
    this.process = process;
    this.port = port;
  }

  /**
   * Options to run a pipeline on this job server: the PortableRunner with this job endpoint, the
   * Java steps in this JVM ({@code LOOPBACK}, so no jars are staged), and Beam's harmless
   * orphaned-channel reports muted.
   * Each call returns new options, for the caller to adjust.
   */
  public PortablePipelineOptions pipelineOptions() {
    return LocalPipelineOptions.forEndpoint(endpoint());
  }

  /** {@code localhost:port}, for {@code --jobEndpoint}. */
  public String endpoint() {
    return "localhost:" + port;
  }

  /** The port the job server listens on. */
  public int port() {
    return port;
  }

  /** The job server's last output lines, for diagnostics. */
  public String outputTail() {
    return process.outputTail();
  }

  /** The job server's process id (to measure its memory, say). */
  public long pid() {
    return process.pid();
  }

  /** Stops the job server process. */
  @Override
  public void close() {
    process.close();
  }
}
