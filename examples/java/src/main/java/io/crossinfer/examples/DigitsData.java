package io.crossinfer.examples;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.zip.GZIPInputStream;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.values.Row;

/**
 * The digits data and demo models for the examples: scikit-learn's bundled 8x8 handwritten
 * digits (1,797 images, read from the CSV that scikit-learn ships, no download) and the models
 * {@code python -m crossinfer.demo DIR} trains on them.
 */
public final class DigitsData {
  /**
   * Input rows: {@code id}, {@code key} (a made-up user id, for sticky A/B splits), {@code digit}
   * (the true label; not named {@code label}, which is an output field) and {@code features} (64
   * pixel values 0..16).
   */
  public static final Schema SCHEMA =
      Schema.builder()
          .addInt64Field("id")
          .addStringField("key")
          .addInt64Field("digit")
          .addArrayField("features", Schema.FieldType.DOUBLE)
          .build();

  private DigitsData() {}

  /** Trains the demo models into {@code dir} (kept if already there) and returns it. */
  public static Path prepareModels(Path python, Path dir) throws IOException {
    Files.createDirectories(dir);
    run(python, List.of("-m", "crossinfer.demo", dir.toString()));
    return dir;
  }

  /** Where the interpreter's scikit-learn keeps {@code digits.csv.gz}. */
  public static Path sklearnDigitsCsv(Path python) throws IOException {
    String out =
        run(
            python,
            List.of(
                "-c",
                "import os, sklearn.datasets as d; "
                    + "print(os.path.join(os.path.dirname(d.__file__), 'data', 'digits.csv.gz'))"));
    String[] lines = out.strip().split("\n");
    return Paths.get(lines[lines.length - 1].strip());
  }

  /** The first {@code limit} digits (all 1,797 for a larger limit) as rows of {@link #SCHEMA}. */
  public static List<Row> load(Path digitsCsvGz, int limit) throws IOException {
    List<Row> rows = new ArrayList<>();
    try (BufferedReader reader =
        new BufferedReader(
            new InputStreamReader(
                new GZIPInputStream(Files.newInputStream(digitsCsvGz)),
                StandardCharsets.UTF_8))) {
      String line;
      long id = 0;
      while ((line = reader.readLine()) != null && rows.size() < limit) {
        if (line.isBlank()) {
          continue;
        }
        String[] cells = line.split(",");
        List<Double> features = new ArrayList<>(cells.length - 1);
        for (int i = 0; i < cells.length - 1; i++) {
          features.add(Double.parseDouble(cells[i]));
        }
        long digit = (long) Double.parseDouble(cells[cells.length - 1]);
        rows.add(row(id, "user-" + id, digit, features));
        id++;
      }
    }
    return rows;
  }

  /** One input row. */
  public static Row row(long id, String key, long digit, List<Double> features) {
    return Row.withSchema(SCHEMA).addValues(id, key, digit, features).build();
  }

  /** Runs {@code python args...}, returning its output; fails with the output if it fails. */
  static String run(Path python, List<String> args) throws IOException {
    List<String> command = new ArrayList<>();
    command.add(python.toString());
    command.addAll(args);
    ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true);
    builder.environment().put("PYTHONUNBUFFERED", "1");
    Process process = builder.start();
    String output;
    try {
      output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      if (!process.waitFor(10, TimeUnit.MINUTES)) {
        process.destroyForcibly();
        throw new IOException("timed out: " + String.join(" ", command));
      }
    } catch (InterruptedException e) {
      process.destroyForcibly();
      Thread.currentThread().interrupt();
      throw new IOException("interrupted: " + String.join(" ", command), e);
    }
    if (process.exitValue() != 0) {
      throw new IOException(
          String.join(" ", command) + " failed with exit code " + process.exitValue() + ":\n"
              + output);
    }
    return output;
  }
}
