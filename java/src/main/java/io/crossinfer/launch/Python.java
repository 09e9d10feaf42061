package io.crossinfer.launch;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.HashMap;
import java.util.Map;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Finds the Python interpreter that runs crossinfer: {@code $CROSSINFER_PYTHON}, else the first
 * {@code .venv/bin/python} found in the JVM's working directory or, going up, in one of its
 * parents (run from {@code java/} or a module under the repository, it finds the repository's
 * {@code .venv}), else {@code python3} from the PATH, which must then have crossinfer installed.
 */
public final class Python {
  /** Environment variable naming the Python interpreter to use. */
  public static final String ENV = "CROSSINFER_PYTHON";

  private Python() {}

  /** The interpreter to use, see the class comment. */
  public static Path resolve() {
    String fromEnv = System.getenv(ENV);
    if (fromEnv != null && !fromEnv.isBlank()) {
      return Paths.get(fromEnv);
    }
    Path venv = findUpwards(Paths.get(".venv", "bin", "python"));
    return venv != null ? venv : Paths.get("python3");
  }

  /**
   * What to do when {@code python} has no crossinfer (its child failed with "No module named
   * ..."): names {@link #ENV}.
   */
  static String withoutCrossinfer(Path python) {
    return "The Python used, " + python + ", cannot import crossinfer. Set $" + ENV
        + " to the interpreter of an environment with crossinfer installed (for a checkout:"
        + " make venv, then <repository>/.venv/bin/python), or run from a directory with that"
        + " .venv in it or above it.";
  }

  /** {@code relative} in the working directory or its nearest parent that has it, or null. */
  static @Nullable Path findUpwards(Path relative) {
    Path dir = Paths.get("").toAbsolutePath();
    while (dir != null) {
      Path candidate = dir.resolve(relative);
      if (Files.isRegularFile(candidate)) {
        return candidate;
      }
      dir = dir.getParent();
    }
    return null;
  }

  /**
   * Environment for a Python child process: unbuffered output, and the interpreter's directory
   * first on the PATH so processes it starts by name ({@code python}, as Beam's worker pool does)
   * are the same environment's.
   */
  static Map<String, String> childEnvironment(Path python) {
    Map<String, String> env = new HashMap<>();
    env.put("PYTHONUNBUFFERED", "1");
    Path bin = python.toAbsolutePath().getParent();
    if (python.getParent() != null && bin != null) {
      String path = System.getenv("PATH");
      env.put("PATH", bin + (path == null || path.isEmpty() ? "" : ":" + path));
    }
    return env;
  }
}
