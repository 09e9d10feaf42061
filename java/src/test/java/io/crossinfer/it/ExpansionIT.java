package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import io.crossinfer.ABTest;
import io.crossinfer.ExpansionException;
import io.crossinfer.Inference;
import io.crossinfer.InferenceResult;
import io.crossinfer.Model;
import io.crossinfer.Op;
import io.crossinfer.examples.DigitsData;
import io.crossinfer.launch.ExpansionServiceLauncher;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * Pipeline construction against a real expansion service (nothing runs): the outputs carry
 * schemas Java reads, and a spec the service refuses fails the Java program at construction, with
 * the service's message and the field path.
 */
public class ExpansionIT {
  private static ExpansionServiceLauncher service;
  private static Path models;

  @BeforeClass
  public static void startService() throws Exception {
    models = E2e.models();
    service =
        ExpansionServiceLauncher.builder()
            .python(E2e.python())
            .modelRoots(models.toString())
            .logFile(E2e.workDir().resolve("construction-expansion-service.log"))
            .start();
  }

  @AfterClass
  public static void stopService() {
    if (service != null) {
      service.close();
    }
  }

  private static PCollection<Row> input() throws Exception {
    // Construction only: the pipeline is never run, so no job server is needed.
    Pipeline p = Pipeline.create(E2e.portableOptions("localhost:1"));
    return p.apply(Create.of(E2e.digits(3)).withRowSchema(DigitsData.SCHEMA));
  }

  @Test
  public void outputSchemasFollowTheWireContract() throws Exception {
    PCollection<Row> input = input();
    InferenceResult result = input.apply(E2e.abTest().withExpansionService(service.address()));
    Schema out = result.output().getSchema();
    assertEquals(
        List.of("id", "key", "digit", "features", "model", "path", "inference", "label", "score",
            "labels", "scores"),
        out.getFieldNames());
    assertEquals(Schema.FieldType.STRING, out.getField("model").getType());
    assertEquals(Schema.FieldType.STRING, out.getField("path").getType());
    assertEquals(Schema.FieldType.array(Schema.FieldType.DOUBLE),
        out.getField("inference").getType());
    assertEquals(Schema.FieldType.INT64.withNullable(true), out.getField("label").getType());
    assertEquals(Schema.FieldType.DOUBLE.withNullable(true), out.getField("score").getType());
    assertEquals(Schema.FieldType.array(Schema.FieldType.INT64).withNullable(true),
        out.getField("labels").getType());
    Schema failures = result.failures().getSchema();
    assertEquals(List.of("element", "node", "error"), failures.getFieldNames());
    assertTrue(failures.getField("element").getType().getRowSchema().equivalent(input.getSchema()));
  }

  @Test
  public void missingModelFileFailsConstructionNamingTheField() throws Exception {
    String missing = models.resolve("no_such_model.pkl").toString();
    PCollection<Row> input = input();
    ExpansionException e =
        assertThrows(
            ExpansionException.class,
            () ->
                input.apply(
                    Model.sklearn("lost", missing).withExpansionService(service.address())));
    assertTrue(e.getMessage(), e.getMessage().contains("uri: no such file"));
    assertTrue(e.getMessage(), e.serviceMessage().contains(missing));
    assertEquals(service.address(), e.address());
  }

  @Test
  public void nestedBadArmIsReportedWithItsPath() throws Exception {
    PCollection<Row> input = input();
    ABTest ab =
        ABTest.of(
                "ab",
                ABTest.Arm.of("a", E2e.lr()),
                ABTest.Arm.of("b", Model.sklearn("gone", models.resolve("gone.pkl").toString())))
            .withExpansionService(service.address());
    ExpansionException e = assertThrows(ExpansionException.class, () -> input.apply(ab));
    assertTrue(e.getMessage(), e.getMessage().contains("node.arms[1].node.uri: no such file"));
  }

  @Test
  public void modelOutsideTheServiceModelRootsIsRefused() throws Exception {
    PCollection<Row> input = input();
    ExpansionException e =
        assertThrows(
            ExpansionException.class,
            () ->
                input.apply(
                    Model.sklearn("elsewhere", "/etc/passwd")
                        .withExpansionService(service.address())));
    assertTrue(e.getMessage(), e.getMessage().contains("outside the allowed model roots"));
  }

  @Test
  public void classOutsideTheAllowListIsRefused() throws Exception {
    PCollection<Row> input = input();
    Model evil =
        Model.pytorch("evil", E2e.model("digits_mlp.pt"))
            .withStateDict("os:system", Map.of("command", "true"))
            .withPostprocess(Op.argmax());
    ExpansionException e =
        assertThrows(
            ExpansionException.class,
            () -> input.apply(evil.withExpansionService(service.address())));
    assertTrue(e.getMessage(), e.getMessage().contains("model_class"));
    assertTrue(e.getMessage(), e.getMessage().contains("allow-list"));
  }

  @Test
  public void invalidJsonSpecFromAnotherTeamIsRefusedByTheService() throws Exception {
    PCollection<Row> input = input();
    String spec =
        "{\"version\": 1, \"node\": {\"kind\": \"model\", \"name\": \"m\", \"framework\":"
            + " \"sklearn\", \"uri\": \"" + E2e.model("digits_lr.pkl") + "\", \"devise\": \"gpu\"}}";
    ExpansionException e =
        assertThrows(
            ExpansionException.class,
            () ->
                input.apply(
                    Inference.ofSpecJson(spec).withExpansionService(service.address())));
    assertTrue(e.getMessage(), e.getMessage().contains("node.devise: unknown field"));
  }

  @Test
  public void theServiceStaysUpAfterRefusals() throws Exception {
    missingModelFileFailsConstructionNamingTheField();
    assertTrue(service.isAlive());
    // ...and still expands a good spec.
    PCollection<Row> input = input();
    assertTrue(input.apply(E2e.lr().withExpansionService(service.address())).output().hasSchema());
  }
}
