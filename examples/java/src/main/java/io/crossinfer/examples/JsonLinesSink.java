package io.crossinfer.examples;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.transforms.windowing.IntervalWindow;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PDone;
import org.apache.beam.sdk.values.Row;

/**
 * Writes rows as JSON lines into files of a local directory, one file per bundle, in batch and
 * streaming alike (a window's bounds are added as {@code window_start}/{@code window_end}). For
 * examples and tests on a local runner, where the workers share this machine's disk.
 */
public final class JsonLinesSink extends PTransform<PCollection<Row>, PDone> {
  private static final long serialVersionUID = 1L;

  private final String dir;

  private JsonLinesSink(String dir) {
    this.dir = dir;
  }

  /** Writes into {@code dir} (created if needed). */
  public static JsonLinesSink to(Path dir) {
    return new JsonLinesSink(dir.toAbsolutePath().toString());
  }

  /** Every JSON object written into {@code dir}. */
  public static List<ObjectNode> read(Path dir) throws IOException {
    ObjectMapper mapper = new ObjectMapper();
    List<ObjectNode> out = new ArrayList<>();
    if (!Files.isDirectory(dir)) {
      return out;
    }
    try (var files = Files.list(dir)) {
      for (Path file : (Iterable<Path>) files.sorted()::iterator) {
        if (!file.getFileName().toString().endsWith(".jsonl")) {
          continue;
        }
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
          if (!line.isBlank()) {
            out.add((ObjectNode) mapper.readTree(line));
          }
        }
      }
    }
    return out;
  }

  @Override
  public PDone expand(PCollection<Row> input) {
    input.apply("Write JSON lines", ParDo.of(new WriteFn(dir)));
    return PDone.in(input.getPipeline());
  }

  private static final class WriteFn extends DoFn<Row, Void> {
    private static final long serialVersionUID = 1L;

    private final String dir;
    private transient ObjectMapper mapper;
    private transient List<String> lines;

    WriteFn(String dir) {
      this.dir = dir;
    }

    @Setup
    public void setup() {
      mapper = new ObjectMapper();
    }

    @StartBundle
    public void startBundle() {
      lines = new ArrayList<>();
    }

    @ProcessElement
    public void process(@Element Row row, BoundedWindow window) {
      ObjectNode json = toJson(mapper, row);
      if (window instanceof IntervalWindow) {
        json.put("window_start", ((IntervalWindow) window).start().getMillis());
        json.put("window_end", ((IntervalWindow) window).end().getMillis());
      }
      lines.add(json.toString());
    }

    @FinishBundle
    public void finishBundle() {
      if (lines.isEmpty()) {
        return;
      }
      try {
        Path target = Paths.get(dir);
        Files.createDirectories(target);
        Path tmp = target.resolve("." + UUID.randomUUID() + ".tmp");
        Files.write(tmp, lines, StandardCharsets.UTF_8);
        Files.move(tmp, target.resolve(UUID.randomUUID() + ".jsonl"));
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      lines = new ArrayList<>();
    }
  }

  /** A row as a JSON object, nested rows and arrays included. */
  public static ObjectNode toJson(ObjectMapper mapper, Row row) {
    ObjectNode out = mapper.createObjectNode();
    Schema schema = row.getSchema();
    for (int i = 0; i < schema.getFieldCount(); i++) {
      out.set(schema.getField(i).getName(), mapper.valueToTree(plain(row.getValue(i))));
    }
    return out;
  }

  private static Object plain(Object value) {
    if (value instanceof Row) {
      Row row = (Row) value;
      java.util.Map<String, Object> map = new java.util.LinkedHashMap<>();
      for (int i = 0; i < row.getSchema().getFieldCount(); i++) {
        map.put(row.getSchema().getField(i).getName(), plain(row.getValue(i)));
      }
      return map;
    }
    if (value instanceof Iterable) {
      List<Object> list = new ArrayList<>();
      for (Object item : (Iterable<?>) value) {
        list.add(plain(item));
      }
      return list;
    }
    return value;
  }
}
