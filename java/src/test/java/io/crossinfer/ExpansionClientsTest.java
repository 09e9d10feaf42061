package io.crossinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertSame;

import java.util.UUID;
import org.apache.beam.model.expansion.v1.ExpansionApi;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.model.pipeline.v1.SchemaApi;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.SchemaTranslation;
import org.junit.Test;

/** Row schemas from a service with non-UUID schema ids become readable by Beam Java. */
public class ExpansionClientsTest {
  private static ExpansionApi.ExpansionResponse responseWith(SchemaApi.Schema schema) {
    RunnerApi.Coder coder =
        RunnerApi.Coder.newBuilder()
            .setSpec(
                RunnerApi.FunctionSpec.newBuilder()
                    .setUrn("beam:coder:row:v1")
                    .setPayload(schema.toByteString()))
            .build();
    return ExpansionApi.ExpansionResponse.newBuilder()
        .setComponents(RunnerApi.Components.newBuilder().putCoders("c", coder))
        .build();
  }

  private static SchemaApi.Schema schemaOf(ExpansionApi.ExpansionResponse response)
      throws Exception {
    return SchemaApi.Schema.parseFrom(
        response.getComponents().getCodersOrThrow("c").getSpec().getPayload());
  }

  @Test
  public void readableSchemaIdsBecomeStableUuidsNestedOnesToo() throws Exception {
    Schema inner = Schema.builder().addStringField("s").build();
    SchemaApi.Schema innerProto =
        SchemaTranslation.schemaToProto(inner, true).toBuilder().setId("crossinfer-in-1").build();
    SchemaApi.Schema outer =
        SchemaApi.Schema.newBuilder()
            .setId("crossinfer-failures-abc")
            .addFields(
                SchemaApi.Field.newBuilder()
                    .setName("element")
                    .setType(
                        SchemaApi.FieldType.newBuilder()
                            .setRowType(SchemaApi.RowType.newBuilder().setSchema(innerProto))))
            .build();
    SchemaApi.Schema fixed = schemaOf(ExpansionClients.withUuidSchemaIds(responseWith(outer)));
    String expected =
        UUID.nameUUIDFromBytes("crossinfer-failures-abc".getBytes("UTF-8")).toString();
    assertEquals(expected, fixed.getId());
    assertEquals(
        UUID.nameUUIDFromBytes("crossinfer-in-1".getBytes("UTF-8")).toString(),
        fixed.getFields(0).getType().getRowType().getSchema().getId());
    // Beam Java can now read it.
    assertEquals("element", SchemaTranslation.schemaFromProto(fixed).getField(0).getName());
  }

  @Test
  public void uuidSchemaIdsAreLeftAlone() {
    SchemaApi.Schema schema =
        SchemaApi.Schema.newBuilder().setId(UUID.randomUUID().toString()).build();
    ExpansionApi.ExpansionResponse response = responseWith(schema);
    assertSame(response, ExpansionClients.withUuidSchemaIds(response));
  }
}
