package io.crossinfer;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.beam.sdk.coders.CoderException;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.windowing.GlobalWindow;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Rows -> batches of {@link BatchTransport#BATCH_SCHEMA}, per bundle: each row Row-encoded (it
 * comes back with its results), its features appended to one packed array, its key kept. A row
 * whose features cannot be packed (null, a null value, a byte count that is not a multiple of 4)
 * gets length -1: the service decodes it and fails it with the row transport's message.
 */
final class PackRows extends DoFn<Row, Row> {
  private static final long serialVersionUID = 1L;
  /** Rows per batch at most: enough to amortise the per-element costs, few enough to stream. */
  static final int MAX_ROWS = 512;
  /** Feature bytes per batch at most (wide rows). */
  static final int MAX_BYTES = 4 << 20;
  private static final int UNPACKED = -1;

  /** How the features field is packed, like the row transport's Python side reads it. */
  enum Kind {
    PACKED("<f4"),
    DOUBLES("<f8"),
    LONGS("<i8");

    final String dtype;

    Kind(String dtype) {
      this.dtype = dtype;
    }

    static Kind of(Schema.FieldType type) {
      if (type.getTypeName() == Schema.TypeName.BYTES) {
        return PACKED;
      }
      Schema.TypeName element = type.getCollectionElementType().getTypeName();
      return element == Schema.TypeName.FLOAT || element == Schema.TypeName.DOUBLE
          ? DOUBLES
          : LONGS;
    }
  }

  private final Schema schema;
  private final int features;
  private final int key;
  private final Kind kind;
  // Set in setup(): a DoFn arrives on a worker deserialized, without them.
  private transient RowCoder coder;
  private transient List<byte[]> rows;
  private transient ByteBuffer values;
  private transient ByteBuffer lengths;
  private transient @Nullable List<@Nullable String> keys;

  PackRows(Schema schema, String featuresField, String keyField) {
    this.schema = schema;
    this.features = schema.indexOf(featuresField);
    this.key = schema.hasField(keyField) ? schema.indexOf(keyField) : -1;
    this.kind = Kind.of(schema.getField(features).getType());
  }

  @Setup
  public void setup() {
    coder = RowCoder.of(schema);
    values = buffer(1 << 16);
    lengths = buffer(MAX_ROWS * 4);
    reset();
  }

  @StartBundle
  public void startBundle() {
    reset();
  }

  @ProcessElement
  public void processElement(@Element Row row, OutputReceiver<Row> out) throws CoderException {
    rows.add(CoderUtils.encodeToByteArray(coder, row));
    lengths = ensure(lengths, 4).putInt(pack(row.getValue(features)));
    if (keys != null) {
      keys.add(row.getString(key));
    }
    if (rows.size() >= MAX_ROWS || values.position() >= MAX_BYTES) {
      out.output(batch());
    }
  }

  @FinishBundle
  public void finishBundle(FinishBundleContext context) {
    if (!rows.isEmpty()) {
      context.output(batch(), GlobalWindow.INSTANCE.maxTimestamp(), GlobalWindow.INSTANCE);
    }
  }

  /** Appends the features' values; returns their count, or -1 if they cannot be packed. */
  private int pack(@Nullable Object value) {
    if (value == null) {
      return UNPACKED;
    }
    if (kind == Kind.PACKED) {
      byte[] bytes = (byte[]) value;
      if (bytes.length % Float.BYTES != 0) {
        return UNPACKED;
      }
      values = ensure(values, bytes.length).put(bytes);
      return bytes.length / Float.BYTES;
    }
    Iterable<?> numbers = (Iterable<?>) value;
    int count = 0;
    for (Object number : numbers) {
      if (number == null) {
        return UNPACKED;
      }
      count++;
    }
    values = ensure(values, count * 8);
    for (Object number : numbers) {
      if (kind == Kind.DOUBLES) {
        values.putDouble(((Number) number).doubleValue());
      } else {
        values.putLong(((Number) number).longValue());
      }
    }
    return count;
  }

  private Row batch() {
    Row batch =
        Row.withSchema(BatchTransport.BATCH_SCHEMA)
            .attachValues(
                rows,
                Arrays.copyOf(values.array(), values.position()),
                kind.dtype,
                Arrays.copyOf(lengths.array(), lengths.position()),
                keys);
    reset();
    return batch;
  }

  private void reset() {
    rows = new ArrayList<>(MAX_ROWS);
    values.clear();
    lengths.clear();
    keys = key >= 0 ? new ArrayList<>(MAX_ROWS) : null;
  }

  private static ByteBuffer buffer(int capacity) {
    return ByteBuffer.allocate(capacity).order(ByteOrder.LITTLE_ENDIAN);
  }

  /** {@code buffer}, or a larger copy, with room for {@code bytes} more. */
  private static ByteBuffer ensure(ByteBuffer buffer, int bytes) {
    if (buffer.remaining() >= bytes) {
      return buffer;
    }
    ByteBuffer larger = buffer(Math.max(buffer.capacity() * 2, buffer.position() + bytes));
    buffer.flip();
    return larger.put(buffer);
  }
}
