package io.crossinfer.bench;

import io.crossinfer.Inference;
import io.crossinfer.InferenceResult;
import io.crossinfer.PackedFeatures;
import io.crossinfer.Transport;
import io.crossinfer.launch.Jobs;
import io.crossinfer.launch.LocalJobServer;
import io.crossinfer.launch.PrismJobServer;
import io.crossinfer.launch.Python;
import io.crossinfer.launch.PythonJobServer;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;

/**
 * The Java side of {@code python -m bench.xlang}: Java pipelines calling crossinfer through the
 * expansion service, timed one at a time on request.
 *
 * <p>It starts a local job server ({@code --runner=prism}, the default, or {@code portable}: Beam's
 * Python job server), prints one line {@code ready <job endpoint>}, then reads commands from stdin, one per
 * line, and answers each with one line of JSON:
 *
 * <pre>
 * run ENCODING[-rows] ELEMENTS SPEC_FILE   ->  {"wall_s": ..., "results": ..., "failures": ..., "state": ...}
 * quit
 * </pre>
 *
 * <p>A run builds a pipeline whose source makes {@code ELEMENTS} rows {@code (id, features)} from
 * the first rows of {@code --data} (little-endian float32, {@code --dim} values a row, the rows
 * the Python benchmark uses), with {@code features} as {@code ARRAY<DOUBLE>} ({@code array}, what
 * a Java pipeline holding {@code List<Double>} sends) or as packed float32 bytes ({@code packed},
 * {@link PackedFeatures}); applies {@link Inference#ofSpecJson} of the spec through {@code
 * --expansion-service}; counts results and failures in this JVM (the Java steps run here,
 * LOOPBACK). {@code wall_s} is {@code run()} to the job's end ({@link Jobs#waitUntilFinish}, not
 * Beam's 3-second polling), as the Python side times its own pipelines; building the pipeline
 * (and the expansion) is not timed.
 */
public final class XlangBench {
  private static final int SHARDS = 8;
  static final Map<String, AtomicLong> COUNTS = new ConcurrentHashMap<>();
  private static final Map<String, float[]> DATA = new ConcurrentHashMap<>();

  private XlangBench() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> opts = new HashMap<>();
    for (String arg : args) {
      int eq = arg.indexOf('=');
      if (!arg.startsWith("--") || eq < 0) {
        throw new IllegalArgumentException("expected --name=value, got " + arg);
      }
      opts.put(arg.substring(2, eq), arg.substring(eq + 1));
    }
    String service = require(opts, "expansion-service");
    String data = Paths.get(require(opts, "data")).toAbsolutePath().toString();
    int dim = Integer.parseInt(require(opts, "dim"));
    String runner = opts.getOrDefault("runner", "prism");
    PrintStream out = System.out;
    try (LocalJobServer jobServer = startJobServer(runner)) {
      out.println("ready " + jobServer.endpoint());
      out.flush();
      BufferedReader in =
          new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
      for (String line = in.readLine(); line != null; line = in.readLine()) {
        String[] words = line.trim().split("\\s+");
        if (words[0].equals("quit")) {
          break;
        }
        if (!words[0].equals("run") || words.length != 4) {
          out.println("{\"error\": \"expected 'run ENCODING ELEMENTS SPEC_FILE' or 'quit'\"}");
          out.flush();
          continue;
        }
        String spec = words[3].equals("-") ? null : Files.readString(Paths.get(words[3]));
        out.println(
            run(jobServer, service, spec, words[1], Integer.parseInt(words[2]), data, dim));
        out.flush();
      }
    }
    System.exit(0); // Beam and gRPC leave non-daemon threads behind
  }

  private static LocalJobServer startJobServer(String runner) throws IOException {
    switch (runner) {
      case "prism":
        return PrismJobServer.start();
      case "portable":
        return PythonJobServer.start(Python.resolve(), null, Duration.ofMinutes(2));
      default:
        throw new IllegalArgumentException("--runner must be portable or prism, got " + runner);
    }
  }

  private static String require(Map<String, String> opts, String name) {
    String value = opts.get(name);
    if (value == null) {
      throw new IllegalArgumentException("missing --" + name + "=...");
    }
    return value;
  }

  /** Builds, runs and times one pipeline; returns its JSON line. */
  static String run(LocalJobServer jobServer, String service, String spec, String encoding,
      int elements, String data, int dim) throws InterruptedException {
    // "-rows": one Beam element per row (Transport.ROWS) instead of the default batches
    Transport transport = encoding.endsWith("-rows") ? Transport.ROWS : Transport.BATCHES;
    encoding = encoding.replace("-rows", "");
    Schema schema =
        switch (encoding) {
          case "array" -> Schema.builder()
              .addInt64Field("id")
              .addArrayField("features", Schema.FieldType.DOUBLE)
              .build();
          case "packed" -> Schema.builder()
              .addInt64Field("id")
              .addField(PackedFeatures.field("features"))
              .build();
          default -> throw new IllegalArgumentException("encoding must be array or packed");
        };
    COUNTS.clear();
    Pipeline p = Pipeline.create(jobServer.pipelineOptions());
    PCollection<Row> rows =
        p.apply("Shards", Create.of(IntStream.range(0, SHARDS).boxed().toList()))
            .apply("Generate", ParDo.of(new GenerateFn(data, dim, elements, encoding, schema)))
            .setRowSchema(schema);
    if (spec == null) {
      rows.apply("Count results", ParDo.of(new CountFn("results")));
    } else {
    InferenceResult result =
        rows.apply(
            "crossinfer",
            Inference.ofSpecJson(spec).withTransport(transport).withExpansionService(service));
    result.output().apply("Count results", ParDo.of(new CountFn("results")));
    result.failures().apply("Count failures", ParDo.of(new CountFn("failures")));
    }
    long start = System.nanoTime();
    PipelineResult.State state = Jobs.waitUntilFinish(p.run(), Duration.ofMinutes(10));
    double seconds = (System.nanoTime() - start) / 1e9;
    return String.format(
        "{\"wall_s\": %.6f, \"results\": %d, \"failures\": %d, \"state\": \"%s\"}",
        seconds, count("results"), count("failures"), state);
  }

  static long count(String name) {
    AtomicLong n = COUNTS.get(name);
    return n == null ? 0 : n.get();
  }

  /** The rows of data file {@code path}, read once per JVM. */
  static float[] data(String path) {
    return DATA.computeIfAbsent(
        path,
        p -> {
          try {
            byte[] bytes = Files.readAllBytes(Path.of(p));
            return PackedFeatures.unpack(bytes);
          } catch (IOException e) {
            throw new IllegalStateException("cannot read " + p, e);
          }
        });
  }

  /** Shard {@code s} of {@link #SHARDS} makes rows {@code [n*s/SHARDS, n*(s+1)/SHARDS)}. */
  static final class GenerateFn extends DoFn<Integer, Row> {
    private final String path;
    private final int dim;
    private final int elements;
    private final boolean packed;
    private final Schema schema;
    private final int shards;

    GenerateFn(String path, int dim, int elements, String encoding, Schema schema) {
      this(path, dim, elements, encoding, schema, SHARDS);
    }

    /** Shard {@code s} of {@code shards} makes rows {@code [n*s/shards, n*(s+1)/shards)}. */
    GenerateFn(String path, int dim, int elements, String encoding, Schema schema, int shards) {
      this.path = path;
      this.dim = dim;
      this.elements = elements;
      this.packed = encoding.equals("packed");
      this.schema = schema;
      this.shards = shards;
    }

    @ProcessElement
    public void process(@Element Integer shard, OutputReceiver<Row> out) {
      float[] values = data(path);
      if ((long) elements * dim > values.length) {
        throw new IllegalArgumentException(
            "the data file has " + values.length / dim + " rows, " + elements + " asked for");
      }
      long first = (long) elements * shard / shards;
      long end = (long) elements * (shard + 1) / shards;
      for (long id = first; id < end; id++) {
        int offset = (int) id * dim;
        Object features;
        if (packed) {
          features = PackedFeatures.pack(values, offset, dim);
        } else {
          List<Double> list = new ArrayList<>(dim);
          for (int j = 0; j < dim; j++) {
            list.add((double) values[offset + j]);
          }
          features = list;
        }
        // attachValues: the values already have the schema's types, so skip build()'s per-field
        // checks and conversions (~10% of this JVM's CPU in a profile)
        out.output(Row.withSchema(schema).attachValues(id, features));
      }
    }
  }

  /** Counts elements into this JVM's {@link #COUNTS}, once per bundle. */
  static final class CountFn extends DoFn<Row, Void> {
    private final String name;
    private transient long n;

    CountFn(String name) {
      this.name = name;
    }

    @StartBundle
    public void start() {
      n = 0;
    }

    @ProcessElement
    public void process(@Element Row row) {
      n++;
    }

    @FinishBundle
    public void finish() {
      COUNTS.computeIfAbsent(name, k -> new AtomicLong()).addAndGet(n);
    }
  }
}
