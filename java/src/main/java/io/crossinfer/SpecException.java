package io.crossinfer;

import java.util.List;

/**
 * The spec built with the Java builders is invalid. Thrown when the spec is encoded or the
 * transform is applied, before anything is sent to the expansion service.
 *
 * <p>{@link #problems()} lists every problem found, each as {@code "field.path: what is wrong"},
 * with field paths as in the spec JSON, e.g. {@code "node.arms[1].weight: must be a positive
 * number, got -1.0"}.
 */
public class SpecException extends CrossinferException {
  private static final long serialVersionUID = 1L;

  private final List<String> problems;

  SpecException(List<String> problems) {
    super(format(problems));
    this.problems = List.copyOf(problems);
  }

  /** Every problem found, each as {@code "field.path: message"}. */
  public List<String> problems() {
    return problems;
  }

  private static String format(List<String> problems) {
    if (problems.size() == 1) {
      return "invalid crossinfer spec: " + problems.get(0);
    }
    StringBuilder out =
        new StringBuilder("invalid crossinfer spec (" + problems.size() + " problems):");
    for (String p : problems) {
      out.append("\n  ").append(p);
    }
    return out.toString();
  }
}
