package io.crossinfer;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import org.apache.beam.sdk.schemas.Schema;
import org.junit.Test;

public class PackedFeaturesTest {
  @Test
  public void packsLittleEndianFloat32() {
    // 1.0f = 0x3f800000, -2.5f = 0xc0200000, little-endian
    byte[] expected = {0, 0, (byte) 0x80, 0x3f, 0, 0, 0x20, (byte) 0xc0};
    assertArrayEquals(expected, PackedFeatures.pack(new float[] {1.0f, -2.5f}));
    assertArrayEquals(expected, PackedFeatures.pack(new double[] {1.0, -2.5}));
    assertArrayEquals(expected, PackedFeatures.pack(new float[] {9f, 1.0f, -2.5f, 9f}, 1, 2));
  }

  @Test
  public void unpackInvertsPack() {
    float[] values = {0f, 3.25f, Float.MIN_VALUE, -1e30f};
    assertArrayEquals(values, PackedFeatures.unpack(PackedFeatures.pack(values)), 0f);
    assertThrows(IllegalArgumentException.class, () -> PackedFeatures.unpack(new byte[6]));
  }

  @Test
  public void fieldIsNonNullBytes() {
    Schema.Field field = PackedFeatures.field("features");
    assertEquals("features", field.getName());
    assertEquals(Schema.FieldType.BYTES, field.getType());
  }
}
