package io.crossinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.net.ServerSocket;
import java.util.List;
import org.apache.beam.model.pipeline.v1.ExternalTransforms.ExternalConfigurationPayload;
import org.apache.beam.runners.portability.PortableRunner;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.SchemaTranslation;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.Test;

/** Applying a transform checks what it can before calling the service. No service runs here. */
public class ConstructionTest {
  private static final Schema DIGITS =
      Schema.builder()
          .addInt64Field("id")
          .addArrayField("features", Schema.FieldType.DOUBLE)
          .build();

  private static Pipeline pipeline() {
    PortablePipelineOptions options =
        PipelineOptionsFactory.create().as(PortablePipelineOptions.class);
    options.setRunner(PortableRunner.class);
    options.setJobEndpoint("localhost:1");
    return Pipeline.create(options);
  }

  private static PCollection<Row> rows(Schema schema, Row row) {
    return pipeline().apply(Create.of(row).withRowSchema(schema));
  }

  private static PCollection<Row> digits() {
    return rows(DIGITS, Row.withSchema(DIGITS).addValues(1L, List.of(1.0, 2.0)).build());
  }

  private static Model lr() {
    return Model.sklearn("lr", "/m/lr.pkl");
  }

  @Test
  public void withoutAnExpansionServiceConstructionSaysHowToGiveOne() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> digits().apply(lr()));
    assertTrue(e.getMessage(), e.getMessage().contains("withExpansionService(\"host:port\")"));
    assertTrue(e.getMessage(), e.getMessage().contains("--crossinferExpansionService"));
  }

  @Test
  public void missingFeaturesFieldIsNamed() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                digits()
                    .apply(lr().withFeaturesField("pixels").withExpansionService("localhost:1")));
    assertEquals(
        "withFeaturesField: the input schema has no field 'pixels' (fields: id, features); name"
            + " the numeric array field with withFeaturesField(...)",
        e.getMessage());
  }

  @Test
  public void nonNumericFeaturesAreRefused() {
    Schema schema = Schema.builder().addStringField("features").build();
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                rows(schema, Row.withSchema(schema).addValue("x").build())
                    .apply(lr().withExpansionService("localhost:1")));
    assertTrue(e.getMessage(), e.getMessage().contains("must be an ARRAY (or ITERABLE)"));
  }

  @Test
  public void hashSplitNeedsTheKeyField() {
    ABTest ab =
        ABTest.of("ab", ABTest.Arm.of("a", lr()), ABTest.Arm.of("b", Model.sklearn("b", "b")))
            .withHashSplit()
            .withExpansionService("localhost:1");
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> digits().apply(ab));
    assertTrue(e.getMessage(), e.getMessage().startsWith("withKeyField: the spec routes or"));
  }

  @Test
  public void invalidSpecFailsBeforeTheServiceIsCalled() {
    SpecException e =
        assertThrows(
            SpecException.class,
            () -> digits().apply(Sequence.of("empty").withExpansionService("localhost:1")));
    assertTrue(e.getMessage(), e.getMessage().contains("node.stages: needs at least one stage"));
  }

  @Test
  public void unreachableServiceIsReportedWithItsAddress() throws Exception {
    int port;
    try (ServerSocket socket = new ServerSocket(0)) {
      port = socket.getLocalPort();
    }
    String address = "localhost:" + port;
    ExpansionException e =
        assertThrows(
            ExpansionException.class,
            () -> digits().apply(lr().withExpansionService(address)));
    assertTrue(e.getMessage(), e.getMessage().startsWith(
        "cannot reach the crossinfer expansion service at " + address));
  }

  @Test
  public void pipelineOptionNamesTheServiceForEveryTransform() {
    CrossinferOptions options =
        PipelineOptionsFactory.fromArgs("--crossinferExpansionService=localhost:9999")
            .as(CrossinferOptions.class);
    assertEquals("localhost:9999", options.getCrossinferExpansionService());
  }

  @Test
  public void payloadIsTheWireContractRow() throws Exception {
    byte[] bytes = ExpansionPayload.encode("{\"version\":1}", "pixels", null);
    ExternalConfigurationPayload payload = ExternalConfigurationPayload.parseFrom(bytes);
    Schema schema = SchemaTranslation.schemaFromProto(payload.getSchema());
    assertEquals(List.of("spec", "features_field", "key_field"), schema.getFieldNames());
    assertEquals(Schema.FieldType.STRING, schema.getField("spec").getType());
    assertTrue(schema.getField("features_field").getType().getNullable());
    assertTrue(schema.getField("key_field").getType().getNullable());
    Row row =
        CoderUtils.decodeFromByteArray(RowCoder.of(schema), payload.getPayload().toByteArray());
    assertEquals("{\"version\":1}", row.getString("spec"));
    assertEquals("pixels", row.getString("features_field"));
    assertEquals(null, row.getString("key_field"));
  }

  @Test
  public void jsonSpecPicksTheUrnOfItsRootKind() {
    Inference keyed =
        Inference.ofSpecJson(
            "{\"version\": 1, \"node\": {\"kind\": \"keyed\", \"name\": \"k\", \"routes\": []}}");
    assertEquals("beam:transform:crossinfer:keyed:v1", keyed.urn());
    SpecException e =
        assertThrows(
            SpecException.class,
            () -> Inference.ofSpecJson("{\"version\": 2, \"node\": {\"kind\": \"tree\"}}"));
    assertEquals(2, e.problems().size());
    assertTrue(e.getMessage(), e.getMessage().contains("version: expected 1, got 2"));
    assertThrows(SpecException.class, () -> Inference.ofSpecJson("{not json"));
  }
}
