package io.crossinfer.flink;

import java.util.List;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.runners.flink.FlinkJobInvoker;
import org.apache.beam.runners.flink.FlinkJobServerDriver;
import org.apache.beam.runners.jobsubmission.JobInvocation;
import org.apache.beam.sdk.io.FileSystems;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.util.construction.resources.PipelineResourcesDetector;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.Struct;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.Value;
import org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.util.concurrent.ListeningExecutorService;

/**
 * Beam's Flink job server ({@link FlinkJobServerDriver}, same flags) with one change: it does not
 * ship its own classpath to the Flink cluster with every job.
 *
 * <p>Beam's {@link FlinkJobInvoker} hands Flink every jar on the job server's classpath as the
 * job's "user jars" (it scans the classpath for them). A shadow job-server jar makes that one
 * ~100 MB upload per job; run from the Maven-resolved jars, it is all ~160 of them, 150 MB,
 * uploaded to the JobManager's blob server and downloaded by every TaskManager for every job
 * (~20 s a job here, and 300 MB of blobs). The cluster that {@code io.crossinfer.launch.FlinkCluster}
 * starts runs from the same jars with parent-first class loading, so jobs need no jars at all:
 * this invoker sets Beam's {@code pipelineResourcesDetectorFactoryClass} option to {@link
 * NothingToStage} before Beam's own invoker runs, and everything else is Beam's.
 */
public final class ClusterJobServer {
  /** The Beam option (as the portable job API names it) that picks how jars are found. */
  static final String DETECTOR_OPTION = "beam:option:pipeline_resources_detector_factory_class:v1";

  private ClusterJobServer() {}

  public static void main(String[] args) throws Exception {
    // As FlinkJobServerDriver.main does.
    FileSystems.setDefaultPipelineOptions(PipelineOptionsFactory.create());
    FlinkJobServerDriver.FlinkServerConfiguration config = FlinkJobServerDriver.parseArgs(args);
    FlinkJobServerDriver.fromConfig(config, () -> new Invoker(config)).run();
  }

  /** Beam's Flink invoker, told to stage nothing. */
  static final class Invoker extends FlinkJobInvoker {
    Invoker(FlinkJobServerDriver.FlinkServerConfiguration config) {
      super(config);
    }

    @Override
    protected JobInvocation invokeWithExecutor(
        RunnerApi.Pipeline pipeline,
        Struct options,
        String retrievalToken,
        ListeningExecutorService executorService) {
      Struct nothingToStage =
          options.toBuilder()
              .putFields(
                  DETECTOR_OPTION,
                  Value.newBuilder().setStringValue(NothingToStage.class.getName()).build())
              .build();
      return super.invokeWithExecutor(pipeline, nothingToStage, retrievalToken, executorService);
    }
  }

  /** Finds no jars to ship: the cluster already has every class a portable job needs. */
  public static final class NothingToStage
      implements PipelineResourcesDetector.Factory, PipelineResourcesDetector {
    private static final long serialVersionUID = 1L;

    /** What Beam's InstanceBuilder calls. */
    public static NothingToStage create() {
      return new NothingToStage();
    }

    @Override
    public PipelineResourcesDetector getPipelineResourcesDetector() {
      return this;
    }

    @Override
    public List<String> detect(ClassLoader classLoader) {
      return List.of();
    }
  }
}
