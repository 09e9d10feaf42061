package io.crossinfer.launch;

import java.util.List;
import java.util.logging.Level;
import java.util.logging.Logger;
import org.apache.beam.runners.portability.PortableRunner;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.options.SdkHarnessOptions;

/**
 * Pipeline options for a local job server: the PortableRunner, the job endpoint, and the Java
 * steps in this JVM ({@code LOOPBACK}).
 */
final class LocalPipelineOptions {
  /**
   * Beam's Java harness leaves gRPC channels to the runner unclosed when a job ends, and gRPC
   * reports each at SEVERE, with a stack trace, when it is garbage collected. Harmless; muted.
   */
  static final String ORPHAN_CHANNEL_LOGGER =
      "org.apache.beam.vendor.grpc.v1p69p0.io.grpc.internal.ManagedChannelOrphanWrapper";

  /**
   * The same logger in this JVM, held so its level sticks (java.util.logging keeps loggers weakly):
   * with LOOPBACK the harness runs here, and the override above does not reach every report.
   */
  private static final Logger ORPHAN_CHANNEL_LOG = Logger.getLogger(ORPHAN_CHANNEL_LOGGER);

  private LocalPipelineOptions() {}

  static PortablePipelineOptions forEndpoint(String jobEndpoint) {
    ORPHAN_CHANNEL_LOG.setLevel(Level.OFF);
    PortablePipelineOptions options =
        PipelineOptionsFactory.create().as(PortablePipelineOptions.class);
    options.setRunner(PortableRunner.class);
    options.setJobEndpoint(jobEndpoint);
    options.setDefaultEnvironmentType("LOOPBACK");
    // The Java steps run in this JVM (LOOPBACK): nothing needs its classpath. Left unset, Beam
    // stages every jar of it to the job server on each run (~0.5 s a job here, for nothing).
    options.setFilesToStage(List.of());
    options
        .as(SdkHarnessOptions.class)
        .setSdkHarnessLogLevelOverrides(
            new SdkHarnessOptions.SdkHarnessLogLevelOverrides()
                .addOverrideForName(ORPHAN_CHANNEL_LOGGER, SdkHarnessOptions.LogLevel.OFF));
    return options;
  }
}
