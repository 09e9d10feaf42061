package io.crossinfer;

import java.util.ArrayList;
import java.util.List;

/** Collects spec problems with their field paths, then throws them all at once. */
final class Problems {
  private final List<String> problems = new ArrayList<>();

  void add(String path, String message) {
    problems.add(path + ": " + message);
  }

  boolean isEmpty() {
    return problems.isEmpty();
  }

  void throwIfAny() {
    if (!problems.isEmpty()) {
      throw new SpecException(problems);
    }
  }
}
