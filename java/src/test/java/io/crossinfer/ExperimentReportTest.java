package io.crossinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import org.apache.beam.sdk.schemas.Schema;
import org.junit.Test;

/** The report's builder checks its settings at construction (the IT runs it end to end). */
public class ExperimentReportTest {
  private static ABTest ab() {
    return ABTest.of(
        "exp",
        ABTest.Arm.of("control", Model.sklearn("a", "/m/a.pkl")),
        ABTest.Arm.of("treatment", Model.sklearn("b", "/m/b.pkl")));
  }

  @Test
  public void badSettingsFailAtConstructionNamingTheMethod() {
    ExperimentReport report = ExperimentReport.of(ab());
    assertTrue(
        assertThrows(IllegalArgumentException.class, () -> report.withConfidence(1.5))
            .getMessage()
            .startsWith("withConfidence: 1.5 is not in (0, 1)"));
    assertTrue(
        assertThrows(IllegalArgumentException.class, () -> report.withGroundTruth("bad name"))
            .getMessage()
            .startsWith("withGroundTruth: 'bad name' is not a field name"));
    assertTrue(
        assertThrows(IllegalArgumentException.class, () -> report.withIdField("1id"))
            .getMessage()
            .startsWith("withIdField: '1id' is not a field name"));
    assertTrue(
        assertThrows(IllegalArgumentException.class, () -> report.withKeyField("user-id"))
            .getMessage()
            .startsWith("withKeyField: 'user-id' is not a field name"));
  }

  @Test
  public void theInputSchemaIsTheWireContracts() {
    Schema s = ExperimentReport.INPUT_SCHEMA;
    assertEquals(
        java.util.List.of(
            "path", "failed", "label", "score", "value", "truth", "id", "model_ms", "batch_size",
            "key"),
        s.getFieldNames());
    assertEquals(Schema.FieldType.STRING.withNullable(true), s.getField("key").getType());
    assertEquals(Schema.FieldType.array(Schema.FieldType.DOUBLE).withNullable(true),
        s.getField("model_ms").getType());
  }
}
