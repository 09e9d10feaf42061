package io.crossinfer;

import java.util.Base64;
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
 * {@code spec} (STRING), {@code features_field} and {@code key_field} (nullable STRING), and for
 * the batch transport {@code transport} ({@code batches}) and {@code input_schema} (the rows'
 * {@code Schema} proto, base64).
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

  static byte[] encode(String specJson, @Nullable String featuresField, @Nullable String keyField) {
    Schema schema = schema();
    return encode(
        schema, Row.withSchema(schema).addValues(specJson, featuresField, keyField).build());
  }

  /** The payload of the batch transport of rows of {@code rowSchema}. */
  static byte[] encodeBatches(
      String specJson,
      @Nullable String featuresField,
      @Nullable String keyField,
      Schema rowSchema) {
    Schema schema =
        Schema.builder()
            .addFields(schema().getFields())
            .addStringField("transport")
            .addStringField("input_schema")
            .build();
    schema.setUUID(UUID.randomUUID());
    String rows =
        Base64.getEncoder()
            .encodeToString(SchemaTranslation.schemaToProto(rowSchema, true).toByteArray());
    return encode(
        schema,
        Row.withSchema(schema)
            .addValues(specJson, featuresField, keyField, BatchTransport.NAME, rows)
            .build());
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
