package io.crossinfer;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.DoubleBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.beam.sdk.coders.CoderException;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The service's outputs under the batch transport, back to the rows of the row transport: each
 * result of a result batch becomes a result row (its input row's fields, then the output fields),
 * each failure a failure row holding its input row.
 */
final class UnpackResults {
  private UnpackResults() {}

  /** A DoFn that decodes the input rows the service sends back as bytes. */
  abstract static class DecodesRows extends DoFn<Row, Row> {
    private static final long serialVersionUID = 1L;
    final Schema input;
    // Set in setup(): a DoFn arrives on a worker deserialized, without it.
    private transient RowCoder coder;

    DecodesRows(Schema input) {
      this.input = input;
    }

    @Setup
    public void setup() {
      coder = RowCoder.of(input);
    }

    /** The input row whose {@code RowCoder} bytes are {@code bytes}. */
    Row decode(byte[] bytes) throws CoderException {
      return CoderUtils.decodeFromByteArray(coder, bytes);
    }
  }

  /** Result batches -> result rows. */
  static final class Results extends DecodesRows {
    private static final long serialVersionUID = 1L;
    private final Schema results;
    /** Indices of the input fields the result rows keep, in order. */
    private final int[] kept;
    /** Whether the batches carry the timing columns (and the rows the timing fields). */
    private final boolean timing;

    Results(Schema input, Schema results) {
      this(input, results, false);
    }

    Results(Schema input, Schema results, boolean timing) {
      super(input);
      this.results = results;
      this.timing = timing;
      List<String> added = BatchTransport.addedFields(timing);
      this.kept =
          input.getFields().stream()
              .filter(f -> !added.contains(f.getName()))
              .mapToInt(f -> input.indexOf(f.getName()))
              .toArray();
    }

    @ProcessElement
    public void processElement(@Element Row batch, OutputReceiver<Row> out)
        throws CoderException {
      List<byte[]> rows = new ArrayList<>(batch.<byte[]>getArray("rows"));
      List<String> models = new ArrayList<>(batch.<String>getArray("models"));
      List<String> paths = new ArrayList<>(batch.<String>getArray("paths"));
      IntBuffer node = bytes(batch, "node").asIntBuffer();
      DoubleBuffer inference = bytes(batch, "inference").asDoubleBuffer();
      IntBuffer inferenceLengths = bytes(batch, "inference_lengths").asIntBuffer();
      LongBuffer label = bytes(batch, "label").asLongBuffer();
      ByteBuffer labelSet = bytes(batch, "label_set");
      DoubleBuffer score = bytes(batch, "score").asDoubleBuffer();
      ByteBuffer scoreSet = bytes(batch, "score_set");
      LongBuffer labels = bytes(batch, "labels").asLongBuffer();
      IntBuffer labelsLengths = bytes(batch, "labels_lengths").asIntBuffer();
      DoubleBuffer scores = bytes(batch, "scores").asDoubleBuffer();
      IntBuffer scoresLengths = bytes(batch, "scores_lengths").asIntBuffer();
      // The timing columns (docs/wire-contract.md): model_ms and batch_size concatenated, each
      // result's count of model stages in model_ms_lengths.
      DoubleBuffer modelMs = timing ? bytes(batch, "model_ms").asDoubleBuffer() : null;
      IntBuffer modelMsLengths = timing ? bytes(batch, "model_ms_lengths").asIntBuffer() : null;
      LongBuffer batchSize = timing ? bytes(batch, "batch_size").asLongBuffer() : null;
      for (int i = 0; i < rows.size(); i++) {
        Row row = decode(rows.get(i));
        List<@Nullable Object> values = new ArrayList<>(results.getFieldCount());
        for (int field : kept) {
          values.add(row.getValue(field));
        }
        int pair = node.get(i);
        values.add(models.get(pair));
        values.add(paths.get(pair));
        values.add(doubles(inference, inferenceLengths.get(i)));
        values.add(labelSet.get(i) != 0 ? label.get(i) : null);
        values.add(scoreSet.get(i) != 0 ? score.get(i) : null);
        values.add(longs(labels, labelsLengths.get(i)));
        values.add(doubles(scores, scoresLengths.get(i)));
        if (modelMs != null && modelMsLengths != null && batchSize != null) {
          int stages = modelMsLengths.get(i);
          values.add(doubles(modelMs, stages));
          values.add(longs(batchSize, stages));
        }
        out.output(Row.withSchema(results).attachValues(values));
      }
    }

    private static ByteBuffer bytes(Row batch, String field) {
      byte[] value = batch.getBytes(field);
      return ByteBuffer.wrap(value == null ? new byte[0] : value).order(ByteOrder.LITTLE_ENDIAN);
    }

    /** The next {@code count} values (null for -1), advancing {@code buffer}. */
    private static @Nullable List<Double> doubles(DoubleBuffer buffer, int count) {
      if (count < 0) {
        return null;
      }
      double[] values = new double[count];
      buffer.get(values);
      return Arrays.stream(values).boxed().toList();
    }

    private static @Nullable List<Long> longs(LongBuffer buffer, int count) {
      if (count < 0) {
        return null;
      }
      long[] values = new long[count];
      buffer.get(values);
      return Arrays.stream(values).boxed().toList();
    }
  }

  /** Failure rows {@code (element BYTES, node, error)} -> failure rows holding the input row. */
  static final class Failures extends DecodesRows {
    private static final long serialVersionUID = 1L;
    private final Schema failures;

    Failures(Schema input, Schema failures) {
      super(input);
      this.failures = failures;
    }

    @ProcessElement
    public void processElement(@Element Row failure, OutputReceiver<Row> out)
        throws CoderException {
      Row element = decode(failure.getBytes("element"));
      out.output(
          Row.withSchema(failures)
              .attachValues(element, failure.getString("node"), failure.getString("error")));
    }
  }
}
