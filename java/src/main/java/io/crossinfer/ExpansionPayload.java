package io.crossinfer;

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
 * {@code spec} (STRING), {@code features_field} and {@code key_field} (nullable STRING).
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
    Row row = Row.withSchema(schema).addValues(specJson, featuresField, keyField).build();
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
