package io.crossinfer.it;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.sdk.util.construction.PTransformTranslation;
import org.apache.beam.sdk.util.construction.PipelineTranslation;
import org.apache.beam.sdk.util.construction.SdkComponents;

/**
 * What a runner of another Beam Java version would have to deserialize, as Java objects, of a
 * portable pipeline built here (Beam Java 2.65 on the client, 2.62 in the Flink job server and
 * cluster; docs/deploy.md, "Versions").
 *
 * <p>A portable runner runs a pipeline's user code in SDK harnesses (the Java steps in the
 * client's own 2.65 harness, LOOPBACK; the Python steps in Python workers). It executes only
 * Impulse, GroupByKey, Flatten, Reshuffle, TestStream and Read itself, and moves elements between
 * stages with its own wire coders, in which every coder it does not know (a Java {@code
 * beam:coders:javasdk:0.1} coder) is an opaque length-prefixed byte string. What it must
 * rehydrate from the pipeline is then:
 *
 * <ul>
 *   <li>every windowing strategy of a PCollection it handles: a window function serialized as a
 *       Java object ({@code beam:window_fn:serialized_java:v1}), or a window coder that is one;
 *   <li>the element coder of a TestStream (it decodes the events itself);
 *   <li>the source of a primitive Read (a Java object).
 * </ul>
 *
 * <p>The PCollections inside a Reshuffle are not handled: the runner replaces the composite by
 * its own repartitioning (Java's Reshuffle uses a Java-serialized window function inside).
 * {@link #javaObjectsForTheRunner} lists each such object of a pipeline; FlinkIT asserts the list
 * is empty for every pipeline it runs, and that a pipeline with one (a TestStream with a Java
 * coder) fails on the 2.62 cluster with {@code InvalidClassException}.
 */
final class RunnerBoundary {
  static final String JAVA_CODER = "beam:coders:javasdk:0.1";
  static final String JAVA_WINDOW_FN = "beam:window_fn:serialized_java:v1";

  /** Composites a Flink runner replaces by its own implementation, without their insides. */
  static final Set<String> NATIVE_COMPOSITES = Set.of(PTransformTranslation.RESHUFFLE_URN);

  private RunnerBoundary() {}

  /** The pipeline as the job server receives it. */
  static RunnerApi.Pipeline toProto(Pipeline pipeline) {
    SdkComponents components = SdkComponents.create();
    // Any environment: which one the Java steps run in does not change what the runner reads.
    components.registerEnvironment(Environments.createDockerEnvironment("java"));
    return PipelineTranslation.toProto(pipeline, components, false);
  }

  /** One line per Java object the runner would deserialize; empty when there is none. */
  static List<String> javaObjectsForTheRunner(Pipeline pipeline) {
    return javaObjectsForTheRunner(toProto(pipeline));
  }

  static List<String> javaObjectsForTheRunner(RunnerApi.Pipeline proto) {
    RunnerApi.Components c = proto.getComponents();
    List<String> found = new ArrayList<>();
    Set<String> pcollections = new HashSet<>();
    List<String> todo = new ArrayList<>(proto.getRootTransformIdsList());
    while (!todo.isEmpty()) {
      String id = todo.remove(todo.size() - 1);
      RunnerApi.PTransform t = c.getTransformsOrThrow(id);
      String urn = t.getSpec().getUrn();
      pcollections.addAll(t.getInputsMap().values());
      pcollections.addAll(t.getOutputsMap().values());
      if (urn.equals(PTransformTranslation.TEST_STREAM_TRANSFORM_URN)) {
        for (String out : t.getOutputsMap().values()) {
          String coder = c.getPcollectionsOrThrow(out).getCoderId();
          if (usesJavaCoder(c, coder)) {
            found.add("TestStream '" + t.getUniqueName() + "' has a Java coder: " + coder);
          }
        }
      }
      if (urn.equals(PTransformTranslation.READ_TRANSFORM_URN)) {
        found.add("Read '" + t.getUniqueName() + "' is a primitive read of a Java source");
      }
      if (!NATIVE_COMPOSITES.contains(urn)) {
        todo.addAll(t.getSubtransformsList());
      }
    }
    Set<String> strategies = new HashSet<>();
    for (String pc : pcollections) {
      strategies.add(c.getPcollectionsOrThrow(pc).getWindowingStrategyId());
    }
    for (String ws : strategies) {
      RunnerApi.WindowingStrategy strategy = c.getWindowingStrategiesOrThrow(ws);
      if (strategy.getWindowFn().getUrn().equals(JAVA_WINDOW_FN)) {
        found.add("windowing strategy " + ws + " has a Java window function");
      }
      if (usesJavaCoder(c, strategy.getWindowCoderId())) {
        found.add("windowing strategy " + ws + " has a Java window coder");
      }
    }
    return found;
  }

  /** Whether coder {@code id} is, or has a component that is, a Java-serialized coder. */
  static boolean usesJavaCoder(RunnerApi.Components c, String id) {
    RunnerApi.Coder coder = c.getCodersOrThrow(id);
    if (coder.getSpec().getUrn().equals(JAVA_CODER)) {
      return true;
    }
    for (String component : coder.getComponentCoderIdsList()) {
      if (usesJavaCoder(c, component)) {
        return true;
      }
    }
    return false;
  }
}
