package io.crossinfer;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import org.apache.beam.sdk.schemas.Schema;

/**
 * Packed features: a feature vector as one {@code BYTES} field of little-endian float32 values,
 * instead of an {@code ARRAY<DOUBLE>}.
 *
 * <p>An array field crosses the language boundary as one boxed {@code Double} per value in Java
 * and one Python float per value in the worker; packed bytes cross as one byte array, which the
 * worker reads as a numpy array without copying. Use them for wide vectors or high element rates:
 *
 * <pre>{@code
 * Schema schema = Schema.builder()
 *     .addInt64Field("id")
 *     .addField(PackedFeatures.field("features"))
 *     .build();
 * Row row = Row.withSchema(schema).addValues(7L, PackedFeatures.pack(vector)).build();
 * }</pre>
 *
 * <p>The worker sees a flat float32 vector; give it a shape with {@link Op#reshape(int...)} in
 * the model's pre-processing. A byte count that is not a multiple of 4 becomes a failure row.
 */
public final class PackedFeatures {
  private PackedFeatures() {}

  /** A non-null {@code BYTES} field named {@code name}, for a schema's features. */
  public static Schema.Field field(String name) {
    return Schema.Field.of(name, Schema.FieldType.BYTES);
  }

  /** {@code values} as little-endian float32 bytes. */
  public static byte[] pack(float[] values) {
    return pack(values, 0, values.length);
  }

  /**
   * {@code length} values of {@code values} from {@code offset} (one row of a flat array) as
   * little-endian float32 bytes.
   */
  public static byte[] pack(float[] values, int offset, int length) {
    ByteBuffer buffer = ByteBuffer.allocate(length * Float.BYTES).order(ByteOrder.LITTLE_ENDIAN);
    buffer.asFloatBuffer().put(values, offset, length);
    return buffer.array();
  }

  /** {@code values}, rounded to float32, as little-endian float32 bytes. */
  public static byte[] pack(double[] values) {
    ByteBuffer buffer = ByteBuffer.allocate(values.length * Float.BYTES).order(ByteOrder.LITTLE_ENDIAN);
    for (double v : values) {
      buffer.putFloat((float) v);
    }
    return buffer.array();
  }

  /** The float32 values of packed {@code bytes}. */
  public static float[] unpack(byte[] bytes) {
    if (bytes.length % Float.BYTES != 0) {
      throw new IllegalArgumentException(
          "packed features hold " + bytes.length + " bytes, not a multiple of 4");
    }
    FloatBuffer floats = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
    float[] values = new float[floats.remaining()];
    floats.get(values);
    return values;
  }
}
