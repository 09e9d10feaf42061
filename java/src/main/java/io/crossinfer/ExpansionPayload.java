package io.crossinfer;

import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.UUID;
import org.apache.beam.model.pipeline.v1.ExternalTransforms.ExternalConfigurationPayload;
import org.apache.beam.sdk.coders.CoderException;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.SchemaTranslation;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.vendor.grpc.v1p69p0.com.google.protobuf.ByteString;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * The v1 payload (docs/wire-contract.md): an {@code ExternalConfigurationPayload} whose Row has
 * {@code spec} (STRING), {@code features_field} and {@code key_field} (nullable STRING), for the
 * batch transport {@code transport} ({@code batches}) and {@code input_schema} (the rows' {@code
 * Schema} proto, base64), and with timing {@code timing} ({@code "true"}; a STRING like every
 * field: the service decodes strings only). Without timing the field is left out, so the payload
 * is byte for byte what it was before timing existed.
 */
final class ExpansionPayload {
  private ExpansionPayload() {}

  static Schema schema() {
    Schema schema =
        Schema.builder()
            .addStringField("spec")
            .addNullableField("features_field", Schema.FieldType.STRING)
            .addNullableField("key_field", Schema.FieldType.STRING)
            .build();
    schema.setUUID(UUID.randomUUID());
    return schema;
  }

  /** Payload value of {@code timing} when asked (absent otherwise). */
  static final String TIMING = "true";

  static byte[] encode(String specJson, @Nullable String featuresField, @Nullable String keyField) {
    return encode(specJson, featuresField, keyField, false);
  }

  /** The row transport's payload; with {@code timing}, results carry the timing fields. */
  static byte[] encode(
      String specJson,
      @Nullable String featuresField,
      @Nullable String keyField,
      boolean timing) {
    Schema.Builder builder = Schema.builder().addFields(schema().getFields());
    List<@Nullable Object> values = new ArrayList<>(List.of(specJson));
    values.add(featuresField);
    values.add(keyField);
    return encodeWithTiming(builder, values, timing);
  }

  /** The payload of the batch transport of rows of {@code rowSchema}. */
  static byte[] encodeBatches(
      String specJson,
      @Nullable String featuresField,
      @Nullable String keyField,
      Schema rowSchema) {
    return encodeBatches(specJson, featuresField, keyField, rowSchema, false);
  }

  /**
   * The payload of the batch transport of rows of {@code rowSchema}; with {@code timing}, result
   * batches carry the timing columns.
   */
  static byte[] encodeBatches(
      String specJson,
      @Nullable String featuresField,
      @Nullable String keyField,
      Schema rowSchema,
      boolean timing) {
    Schema.Builder builder =
        Schema.builder()
            .addFields(schema().getFields())
            .addStringField("transport")
            .addStringField("input_schema");
    String rows =
        Base64.getEncoder()
            .encodeToString(SchemaTranslation.schemaToProto(rowSchema, true).toByteArray());
    List<@Nullable Object> values = new ArrayList<>(List.of(specJson));
    values.add(featuresField);
    values.add(keyField);
    values.add(BatchTransport.NAME);
    values.add(rows);
    return encodeWithTiming(builder, values, timing);
  }

  /**
   * The payload of {@code builder}'s fields holding {@code values}, plus {@code timing} when asked
   * (left out otherwise, so a payload without it is the same bytes as before the field existed).
   */
  private static byte[] encodeWithTiming(
      Schema.Builder builder, List<@Nullable Object> values, boolean timing) {
    if (timing) {
      builder.addStringField("timing");
      values.add(TIMING);
    }
    Schema schema = builder.build();
    schema.setUUID(UUID.randomUUID());
    return encode(schema, Row.withSchema(schema).addValues(values).build());
  }

  /**
   * The payload of the experiment report URN: {@code spec} (STRING), {@code ground_truth}, {@code
   * metric}, {@code control} (nullable STRING) and {@code confidence} (nullable DOUBLE).
   */
  static byte[] encodeReport(
      String specJson,
      @Nullable String groundTruth,
      @Nullable String metric,
      @Nullable String control,
      @Nullable Double confidence) {
    Schema schema =
        Schema.builder()
            .addStringField("spec")
            .addNullableField("ground_truth", Schema.FieldType.STRING)
            .addNullableField("metric", Schema.FieldType.STRING)
            .addNullableField("control", Schema.FieldType.STRING)
            .addNullableField("confidence", Schema.FieldType.DOUBLE)
            .build();
    schema.setUUID(UUID.randomUUID());
    return encode(
        schema,
        Row.withSchema(schema)
            .addValues(specJson, groundTruth, metric, control, confidence)
            .build());
  }

  private static byte[] encode(Schema schema, Row row) {
    try {
      return ExternalConfigurationPayload.newBuilder()
          .setSchema(SchemaTranslation.schemaToProto(schema, true))
          .setPayload(ByteString.copyFrom(CoderUtils.encodeToByteArray(RowCoder.of(schema), row)))
          .build()
          .toByteArray();
    } catch (CoderException e) {
      throw new IllegalStateException("cannot encode the crossinfer payload row", e);
    }
  }
}
