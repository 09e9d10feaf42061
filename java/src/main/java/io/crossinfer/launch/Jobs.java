package io.crossinfer.launch;

import java.time.Duration;
import org.apache.beam.sdk.PipelineResult;

/**
 * Waiting for portable jobs without Beam's 3-second granularity.
 *
 * <p>Beam's {@code PortableRunner} result polls the job service every 3 seconds in {@code
 * waitUntilFinish()}, so a job that finishes in 0.4 s is reported done after 3 s, and every job
 * ends up to 3 s late. {@link #waitUntilFinish(PipelineResult, Duration)} polls the job's state
 * every {@link #POLL_INTERVAL} instead, then lets Beam's {@code waitUntilFinish()} collect the
 * metrics, report errors and clean up as usual.
 */
public final class Jobs {
  /** How often {@link #waitUntilFinish(PipelineResult, Duration)} asks for the job's state. */
  public static final Duration POLL_INTERVAL = Duration.ofMillis(25);

  private Jobs() {}

  /**
   * Waits until {@code result}'s job reaches a terminal state, or {@code timeout} passes.
   *
   * @return the terminal state, as {@link PipelineResult#waitUntilFinish()} returns it (errors
   *     of a failed job are thrown as Beam throws them), or {@code null} on timeout
   */
  public static PipelineResult.State waitUntilFinish(PipelineResult result, Duration timeout)
      throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (!result.getState().isTerminal()) {
      if (System.nanoTime() - deadline > 0) {
        return null;
      }
      Thread.sleep(POLL_INTERVAL.toMillis());
    }
    return result.waitUntilFinish();
  }
}
