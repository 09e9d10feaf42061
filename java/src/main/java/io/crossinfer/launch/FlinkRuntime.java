package io.crossinfer.launch;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The jars of Beam's Flink runner and of Flink (the classpath {@code java/flink/pom.xml}
 * resolves; {@code java/scripts/build-flink.sh} puts them at {@code .tools/flink/lib}), and the
 * {@code java} command line that runs a main class from them. Shared by {@link FlinkCluster} and
 * {@link FlinkJobServer}.
 */
final class FlinkRuntime {
  /** Environment variable naming the directory of the jars. */
  static final String ENV = "CROSSINFER_FLINK_LIB";

  /** The Beam version of the Flink runner in {@code java/flink/pom.xml}. */
  static final String BEAM_VERSION = "2.62.0";

  /**
   * What Flink's own start scripts pass on Java 17 ({@code env.java.opts.all} of Flink 1.19's
   * default config): Flink's and Beam's vendored Netty, Kryo and Pekko reflect into these
   * packages.
   */
  static final List<String> JAVA_17_OPENS =
      List.of(
          "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
          "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
          "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
          "--add-opens=java.base/java.lang=ALL-UNNAMED",
          "--add-opens=java.base/java.net=ALL-UNNAMED",
          "--add-opens=java.base/java.io=ALL-UNNAMED",
          "--add-opens=java.base/java.nio=ALL-UNNAMED",
          "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
          "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
          "--add-opens=java.base/java.text=ALL-UNNAMED",
          "--add-opens=java.base/java.time=ALL-UNNAMED",
          "--add-opens=java.base/java.util=ALL-UNNAMED",
          "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
          "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
          "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED");

  private FlinkRuntime() {}

  /**
   * The directory of the jars: {@code $CROSSINFER_FLINK_LIB}, else {@code .tools/flink/lib} in
   * the working directory or a parent, else null.
   */
  static @Nullable Path resolveLib() {
    String fromEnv = System.getenv(ENV);
    if (fromEnv != null && !fromEnv.isBlank()) {
      return Paths.get(fromEnv);
    }
    for (Path dir = Paths.get("").toAbsolutePath(); dir != null; dir = dir.getParent()) {
      Path lib = dir.resolve(Paths.get(".tools", "flink", "lib"));
      if (Files.isDirectory(lib)) {
        return lib;
      }
    }
    return null;
  }

  /** {@link #resolveLib()}, checked to hold Beam's Flink runner. */
  static Path requireLib() throws IOException {
    Path lib = resolveLib();
    if (lib == null) {
      throw new IOException(
          "no Flink classpath: run java/scripts/build-flink.sh (resolves java/flink/pom.xml"
              + " into .tools/flink/lib) or set $" + ENV);
    }
    checkLib(lib);
    return lib;
  }

  static void checkLib(Path lib) throws IOException {
    for (String jar :
        List.of("beam-runners-flink-1.19-" + BEAM_VERSION + ".jar",
            "crossinfer-flink-job-server-0.1.0.jar")) {
      if (!Files.isRegularFile(lib.resolve(jar))) {
        throw new IOException(
            lib + " does not hold " + jar + "; run java/scripts/build-flink.sh or set $" + ENV);
      }
    }
  }

  /**
   * {@code java <jvmOptions> <the Java 17 opens> -cp LIB/* mainClass}, with this JVM's {@code
   * java}.
   */
  static List<String> javaCommand(Path lib, List<String> jvmOptions, String mainClass) {
    List<String> command = new ArrayList<>();
    command.add(Paths.get(System.getProperty("java.home"), "bin", "java").toString());
    command.addAll(jvmOptions);
    command.addAll(JAVA_17_OPENS);
    // slf4j-simple: timestamps, so the logs of the cluster's JVMs can be read side by side.
    command.add("-Dorg.slf4j.simpleLogger.showDateTime=true");
    command.add("-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS");
    command.add("-cp");
    command.add(lib.toAbsolutePath() + "/*");
    command.add(mainClass);
    return command;
  }
}
