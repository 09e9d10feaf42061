package io.crossinfer.launch;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * A child process whose output is kept (the last lines, for error messages, and optionally a log
 * file), which is stopped with all its descendants on {@link #close()} or when the JVM exits.
 */
final class ManagedProcess implements AutoCloseable {
  private static final int TAIL_LINES = 60;

  private final String name;
  private final Process process;
  private final Deque<String> tail = new ArrayDeque<>();
  private final List<String> lines = new ArrayList<>();
  private final Thread shutdownHook;
  private final @Nullable PrintStream log;
  private boolean closed;

  private ManagedProcess(String name, Process process, @Nullable PrintStream log) {
    this.name = name;
    this.process = process;
    this.log = log;
    this.shutdownHook = new Thread(this::kill, "stop " + name);
    Runtime.getRuntime().addShutdownHook(shutdownHook);
    pump(process.getInputStream(), "out");
    pump(process.getErrorStream(), "err");
  }

  static ManagedProcess start(
      String name,
      List<String> command,
      Map<String, String> environment,
      @Nullable Path workingDirectory,
      @Nullable Path logFile)
      throws IOException {
    ProcessBuilder builder = new ProcessBuilder(command);
    builder.environment().putAll(environment);
    if (workingDirectory != null) {
      builder.directory(workingDirectory.toFile());
    }
    PrintStream log = null;
    if (logFile != null) {
      if (logFile.getParent() != null) {
        Files.createDirectories(logFile.getParent());
      }
      log =
          new PrintStream(
              Files.newOutputStream(
                  logFile, StandardOpenOption.CREATE, StandardOpenOption.APPEND),
              true,
              StandardCharsets.UTF_8);
      log.println("$ " + String.join(" ", command));
    }
    try {
      return new ManagedProcess(name, builder.start(), log);
    } catch (IOException e) {
      if (log != null) {
        log.close();
      }
      throw new IOException("cannot start " + name + " (" + String.join(" ", command) + "): "
          + e.getMessage(), e);
    }
  }

  private void pump(InputStream stream, String kind) {
    Thread t =
        new Thread(
            () -> {
              try (BufferedReader reader =
                  new BufferedReader(new InputStreamReader(stream, StandardCharsets.UTF_8))) {
                String line;
                while ((line = reader.readLine()) != null) {
                  synchronized (this) {
                    tail.addLast(line);
                    if (tail.size() > TAIL_LINES) {
                      tail.removeFirst();
                    }
                    lines.add(line);
                    if (lines.size() > 10_000) {
                      lines.subList(0, 5_000).clear();
                    }
                    notifyAll();
                  }
                  PrintStream out = log;
                  if (out != null) {
                    out.println(line);
                  }
                }
              } catch (IOException e) {
                // The process ended; nothing more to read.
              }
            },
            name + " " + kind);
    t.setDaemon(true);
    t.start();
  }

  /**
   * Waits for an output line matching {@code pattern} and returns the match.
   *
   * @throws IllegalStateException if the process exits first or the timeout passes, with the
   *     process's last output lines
   */
  synchronized Matcher awaitLine(Pattern pattern, Duration timeout) throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    int seen = 0;
    while (true) {
      for (; seen < lines.size(); seen++) {
        Matcher m = pattern.matcher(lines.get(seen));
        if (m.find()) {
          return m;
        }
      }
      if (!process.isAlive()) {
        wait(200); // let the pumps read the last lines
        for (; seen < lines.size(); seen++) {
          Matcher m = pattern.matcher(lines.get(seen));
          if (m.find()) {
            return m;
          }
        }
        throw new IllegalStateException(
            name + " exited with code " + process.exitValue() + " before it was ready"
                + outputTail());
      }
      long left = deadline - System.nanoTime();
      if (left <= 0) {
        throw new IllegalStateException(
            name + " did not print a line matching '" + pattern + "' within " + timeout
                + outputTail());
      }
      wait(Math.max(1, Math.min(TimeUnit.NANOSECONDS.toMillis(left), 250)));
    }
  }

  /** Waits until {@code check} returns a value, polling; fails like {@link #awaitLine}. */
  <T> T await(java.util.function.Supplier<@Nullable T> check, String what, Duration timeout)
      throws InterruptedException {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (true) {
      T value = check.get();
      if (value != null) {
        return value;
      }
      if (!process.isAlive()) {
        Thread.sleep(200);
        throw new IllegalStateException(
            name + " exited with code " + process.exitValue() + " before " + what
                + outputTail());
      }
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException(
            name + ": timed out after " + timeout + " waiting for " + what + outputTail());
      }
      Thread.sleep(100);
    }
  }

  /** A launcher's wait for its started process to be ready, giving what it launched. */
  interface Readiness<T> {
    T await() throws InterruptedException;
  }

  /**
   * Runs {@code readiness}; if it fails or is interrupted, stops this process first, so a failed
   * start leaves no child behind. An interrupt becomes an IOException "interrupted while starting
   * {@code what}".
   */
  <T> T readyOrStopped(String what, Readiness<T> readiness) throws IOException {
    try {
      return readiness.await();
    } catch (InterruptedException e) {
      close();
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while starting " + what, e);
    } catch (RuntimeException e) {
      close();
      throw e;
    }
  }

  /** Waits until {@code host:port} accepts connections. */
  void awaitPort(String host, int port, Duration timeout) throws InterruptedException {
    await(() -> isOpen(host, port) ? Boolean.TRUE : null, "port " + port + " to open", timeout);
  }

  static boolean isOpen(String host, int port) {
    try (Socket socket = new Socket()) {
      socket.connect(new InetSocketAddress(host, port), 500);
      return true;
    } catch (IOException e) {
      return false;
    }
  }

  boolean isAlive() {
    return process.isAlive();
  }

  long pid() {
    return process.pid();
  }

  /** The last lines the process printed, for error messages. */
  synchronized String outputTail() {
    if (tail.isEmpty()) {
      return " (it printed nothing)";
    }
    return "; its last output lines:\n  " + String.join("\n  ", tail);
  }

  private void kill() {
    List<ProcessHandle> descendants = new ArrayList<>();
    process.descendants().forEach(descendants::add);
    // Children first so a dying parent cannot respawn them; then the process itself.
    for (int i = descendants.size() - 1; i >= 0; i--) {
      descendants.get(i).destroy();
    }
    process.destroy();
    try {
      if (!process.waitFor(10, TimeUnit.SECONDS)) {
        process.destroyForcibly();
        process.waitFor(5, TimeUnit.SECONDS);
      }
    } catch (InterruptedException e) {
      process.destroyForcibly();
      Thread.currentThread().interrupt();
    }
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
    for (ProcessHandle child : descendants) {
      while (child.isAlive() && System.nanoTime() < deadline) {
        try {
          Thread.sleep(50);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          break;
        }
      }
      if (child.isAlive()) {
        child.destroyForcibly();
      }
    }
    PrintStream out = log;
    if (out != null) {
      out.flush();
    }
  }

  @Override
  public synchronized void close() {
    if (closed) {
      return;
    }
    closed = true;
    kill();
    try {
      Runtime.getRuntime().removeShutdownHook(shutdownHook);
    } catch (IllegalStateException e) {
      // The JVM is already shutting down.
    }
    if (log != null) {
      log.close();
    }
  }
}
