package io.crossinfer;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A sequence: the spec's {@code sequence} node. Stages run one after the other; each stage's
 * output (after its post-processing) becomes the next stage's features. Output rows come from the
 * last stage; a failure names the stage that failed.
 *
 * <pre>{@code
 * Sequence seq = Sequence.of("digits_seq",
 *         Model.sklearn("digits_pca", "/models/digits_pca.pkl")
 *             .withMethod(SklearnMethod.TRANSFORM)
 *             .withPreprocess(Op.scale(1.0 / 16)),
 *         Model.pytorch("digits_pca_mlp", "/models/digits_pca_mlp.pt")
 *             .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(16, 32, 10)))
 *             .withPostprocess(Op.softmax(), Op.argmax()))
 *     .withExpansionService("localhost:8097");
 *
 * InferenceResult result = rows.apply("PCA then MLP", seq);
 * }</pre>
 */
public final class Sequence extends InferenceTransform<Sequence> {
  private static final long serialVersionUID = 1L;

  private final String name;
  private final List<InferenceTransform<?>> stages;

  private Sequence(String name, List<InferenceTransform<?>> stages, Io io) {
    super(io);
    this.name = name;
    this.stages = stages;
  }

  /** A sequence of {@code stages} (at least one), run in order. */
  public static Sequence of(String name, Node... stages) {
    return of(name, stages == null ? null : List.of(stages));
  }

  /** A sequence of {@code stages} (at least one), run in order. */
  public static Sequence of(String name, List<? extends Node> stages) {
    requireName(name, "Sequence.of name");
    if (stages == null) {
      throw new IllegalArgumentException("Sequence.of: stages must not be null");
    }
    List<InferenceTransform<?>> copy = new ArrayList<>();
    for (int i = 0; i < stages.size(); i++) {
      if (stages.get(i) == null) {
        throw new IllegalArgumentException("Sequence.of: stage " + i + " is null");
      }
      copy.add((InferenceTransform<?>) stages.get(i));
    }
    return new Sequence(name, List.copyOf(copy), Io.DEFAULT);
  }

  /** This sequence with one more stage at the end. */
  public Sequence withStage(Node stage) {
    if (stage == null) {
      throw new IllegalArgumentException("withStage: stage must not be null");
    }
    List<InferenceTransform<?>> more = new ArrayList<>(stages);
    more.add((InferenceTransform<?>) stage);
    return new Sequence(name, List.copyOf(more), io);
  }

  @Override
  Sequence withIo(Io io) {
    return new Sequence(name, stages, io);
  }

  @Override
  public String name() {
    return name;
  }

  @Override
  public String kind() {
    return "sequence";
  }

  /** The stages, in order. */
  public List<Node> stages() {
    return List.copyOf(stages);
  }

  @Override
  List<Map.Entry<String, InferenceTransform<?>>> children() {
    List<Map.Entry<String, InferenceTransform<?>>> out = new ArrayList<>();
    for (int i = 0; i < stages.size(); i++) {
      out.add(Map.entry("stages[" + i + "]", stages.get(i)));
    }
    return out;
  }

  @Override
  void checkNode(String path, Problems problems) {
    if (stages.isEmpty()) {
      problems.add(path + ".stages", "needs at least one stage");
    }
  }

  @Override
  ObjectNode nodeJson() {
    ObjectNode out = Json.object();
    out.put("kind", kind());
    out.put("name", name);
    ArrayNode stagesJson = out.putArray("stages");
    stages.forEach(s -> stagesJson.add(s.nodeJson()));
    return out;
  }
}
