package io.crossinfer;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * An A/B test: the spec's {@code ab_test} node. Elements are split between arms by weight, and
 * each arm runs its own node (a {@link Model}, or a nested {@link Sequence}, {@link ABTest} or
 * {@link Keyed}). Output rows name their arm in {@code path}, e.g. {@code
 * digits_ab/control/digits_lr}.
 *
 * <p>Splits:
 *
 * <ul>
 *   <li>{@link #withRandomSplit(long)} (the default, seed 0): each element picks an arm by weight
 *       from a seeded generator.
 *   <li>{@link #withHashSplit(String)}: sticky on the input's key field: the same key always
 *       lands in the same arm, in batch and in streaming; the salt (default: the test's name)
 *       makes experiments split independently.
 *   <li>{@link #withMirror()}: every element reaches every arm, for side-by-side comparison
 *       (weights are ignored; each arm produces its own output row).
 * </ul>
 *
 * <pre>{@code
 * ABTest ab = ABTest.of("digits_ab",
 *         ABTest.Arm.of("control", 90, lr),
 *         ABTest.Arm.of("treatment", 10, mlp))
 *     .withHashSplit("digits-2026")
 *     .withKeyField("user_id")
 *     .withExpansionService("localhost:8097");
 *
 * InferenceResult result = rows.apply("A/B", ab);
 *
 * // or, arms named after their models, random split:
 * rows.apply(ABTest.of(lr, mlp).split(90, 10).withExpansionService("localhost:8097"));
 * }</pre>
 */
public final class ABTest extends InferenceTransform<ABTest> {
  private static final long serialVersionUID = 1L;

  /** How elements are split between arms. */
  public enum Split {
    /** Each element picks an arm by weight from a seeded generator. */
    RANDOM("random"),
    /** Sticky on the key: {@code sha256(salt + key)} picks the arm. */
    HASH("hash"),
    /** Every element reaches every arm. */
    MIRROR("mirror");

    private final String specName;

    Split(String specName) {
      this.specName = specName;
    }

    /** The name used in the spec JSON. */
    public String specName() {
      return specName;
    }
  }

  /** One arm: a name, a relative weight and the node it runs. */
  public static final class Arm implements Serializable {
    private static final long serialVersionUID = 1L;

    private final String name;
    private final double weight;
    private final InferenceTransform<?> node;

    private Arm(String name, double weight, InferenceTransform<?> node) {
      this.name = name;
      this.weight = weight;
      this.node = node;
    }

    /** An arm of weight 1. */
    public static Arm of(String name, Node node) {
      return of(name, 1, node);
    }

    /** An arm with a relative {@code weight} (positive; weights need not add up to 100). */
    public static Arm of(String name, double weight, Node node) {
      requireName(name, "ABTest.Arm name");
      checkWeight(weight, "ABTest.Arm '" + name + "' weight");
      if (node == null) {
        throw new IllegalArgumentException("ABTest.Arm '" + name + "': node must not be null");
      }
      return new Arm(name, weight, (InferenceTransform<?>) node);
    }

    /** The arm's name. */
    public String name() {
      return name;
    }

    /** The arm's relative weight. */
    public double weight() {
      return weight;
    }

    /** The node the arm runs. */
    public Node node() {
      return node;
    }

    Arm withWeight(double newWeight) {
      return new Arm(name, newWeight, node);
    }
  }

  private final String name;
  private final List<Arm> arms;
  private final Split split;
  private final long seed;
  private final @Nullable String salt;

  private ABTest(
      String name, List<Arm> arms, Split split, long seed, @Nullable String salt, Io io) {
    super(io);
    this.name = name;
    this.arms = arms;
    this.split = split;
    this.seed = seed;
    this.salt = salt;
  }

  /** An A/B test over {@code arms} (at least two), split at random with seed 0. */
  public static ABTest of(String name, Arm... arms) {
    return of(name, arms == null ? null : List.of(arms));
  }

  /** An A/B test over {@code arms} (at least two), split at random with seed 0. */
  public static ABTest of(String name, List<Arm> arms) {
    requireName(name, "ABTest.of name");
    if (arms == null) {
      throw new IllegalArgumentException("ABTest.of: arms must not be null");
    }
    for (int i = 0; i < arms.size(); i++) {
      if (arms.get(i) == null) {
        throw new IllegalArgumentException("ABTest.of: arm " + i + " is null");
      }
    }
    return new ABTest(name, List.copyOf(arms), Split.RANDOM, 0, null, Io.DEFAULT);
  }

  /**
   * An A/B test over nodes, each arm named after its node, weights 1 until {@link
   * #split(double...)}: {@code rows.apply(ABTest.of(modelA, modelB).split(90, 10))}. The test is
   * named {@code <a>_vs_<b>...} (see {@link #withName}).
   */
  public static ABTest of(Node first, Node second, Node... more) {
    List<Arm> arms = new ArrayList<>();
    List<String> names = new ArrayList<>();
    List<Node> nodes = new ArrayList<>(List.of(first, second));
    if (more != null) {
      nodes.addAll(List.of(more));
    }
    for (Node node : nodes) {
      if (node == null) {
        throw new IllegalArgumentException("ABTest.of: a node is null");
      }
      arms.add(Arm.of(node.name(), node));
      names.add(node.name());
    }
    String name = String.join("_vs_", names);
    if (name.length() > 100) {
      name = name.substring(0, 100);
    }
    return of(name, arms);
  }

  /** The same test under another name (the name is also the default hash-split salt). */
  public ABTest withName(String newName) {
    return new ABTest(requireName(newName, "withName"), arms, split, seed, salt, io);
  }

  /** The arms' weights in arm order, e.g. {@code split(90, 10)}; same as {@link #withWeights}. */
  public ABTest split(double... weights) {
    return withWeights(weights);
  }

  /** This test with one more arm. */
  public ABTest withArm(Arm arm) {
    if (arm == null) {
      throw new IllegalArgumentException("withArm: arm must not be null");
    }
    List<Arm> more = new ArrayList<>(arms);
    more.add(arm);
    return new ABTest(name, List.copyOf(more), split, seed, salt, io);
  }

  /** Set the arms' weights in arm order, e.g. {@code withWeights(90, 10)}. */
  public ABTest withWeights(double... weights) {
    if (weights == null || weights.length != arms.size()) {
      throw new IllegalArgumentException(
          "withWeights: expected one weight per arm (" + arms.size() + "), got "
              + (weights == null ? 0 : weights.length));
    }
    List<Arm> weighted = new ArrayList<>();
    for (int i = 0; i < weights.length; i++) {
      checkWeight(weights[i], "withWeights: weight " + i);
      weighted.add(arms.get(i).withWeight(weights[i]));
    }
    return new ABTest(name, List.copyOf(weighted), split, seed, salt, io);
  }

  /** Split at random by weight, from a generator seeded with {@code seed}. */
  public ABTest withRandomSplit(long seed) {
    return new ABTest(name, arms, Split.RANDOM, seed, null, io);
  }

  /** Split by a hash of the key field, salted with the test's name. */
  public ABTest withHashSplit() {
    return new ABTest(name, arms, Split.HASH, 0, null, io);
  }

  /** Split by {@code sha256(salt + key)} of the key field: sticky per key. */
  public ABTest withHashSplit(String salt) {
    if (salt == null || salt.isEmpty()) {
      throw new IllegalArgumentException(
          "withHashSplit: salt must not be empty; use withHashSplit() to salt with the name");
    }
    return new ABTest(name, arms, Split.HASH, 0, salt, io);
  }

  /** Send every element to every arm (side-by-side comparison). */
  public ABTest withMirror() {
    return new ABTest(name, arms, Split.MIRROR, 0, null, io);
  }

  @Override
  ABTest withIo(Io io) {
    return new ABTest(name, arms, split, seed, salt, io);
  }

  private static void checkWeight(double weight, String what) {
    if (!(Double.isFinite(weight) && weight > 0)) {
      throw new IllegalArgumentException(what + ": must be a positive number, got " + weight);
    }
  }

  @Override
  public String name() {
    return name;
  }

  @Override
  public String kind() {
    return "ab_test";
  }

  /** The arms, in order. */
  public List<Arm> arms() {
    return arms;
  }

  /** The split. */
  public Split split() {
    return split;
  }

  /** The random split's seed. */
  public long seed() {
    return seed;
  }

  /** The hash split's salt, or null for the test's name. */
  public @Nullable String salt() {
    return salt;
  }

  @Override
  List<Map.Entry<String, InferenceTransform<?>>> children() {
    List<Map.Entry<String, InferenceTransform<?>>> out = new ArrayList<>();
    for (int i = 0; i < arms.size(); i++) {
      out.add(Map.entry("arms[" + i + "].node", arms.get(i).node));
    }
    return out;
  }

  @Override
  void checkNode(String path, Problems problems) {
    if (arms.size() < 2) {
      problems.add(
          path + ".arms", "an A/B test needs at least two arms, got " + arms.size());
    }
    Set<String> names = new HashSet<>();
    for (int i = 0; i < arms.size(); i++) {
      if (!names.add(arms.get(i).name)) {
        problems.add(
            path + ".arms[" + i + "].name", "arm name '" + arms.get(i).name + "' is used twice");
      }
    }
  }

  @Override
  ObjectNode nodeJson() {
    ObjectNode out = Json.object();
    out.put("kind", kind());
    out.put("name", name);
    ArrayNode armsJson = out.putArray("arms");
    for (Arm arm : arms) {
      ObjectNode a = armsJson.addObject();
      a.put("name", arm.name);
      a.set("weight", Json.wholeIfIntegral(arm.weight));
      a.set("node", arm.node.nodeJson());
    }
    if (split != Split.RANDOM) {
      out.put("split", split.specName());
    }
    if (seed != 0) {
      out.put("seed", seed);
    }
    if (salt != null) {
      out.put("salt", salt);
    }
    return out;
  }
}
