package io.crossinfer;

import static io.crossinfer.LittleEndian.doubles;
import static io.crossinfer.LittleEndian.ints;
import static io.crossinfer.LittleEndian.longs;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.apache.beam.model.pipeline.v1.ExternalTransforms.ExternalConfigurationPayload;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.SchemaTranslation;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.values.Row;
import org.joda.time.Instant;
import org.junit.Test;

/**
 * {@link InferenceTransform#withTiming()} without a service: the payload's {@code timing} field,
 * the results schema, and the batch transport's timing columns unpacked. (Through the service:
 * PortableRunnerIT.)
 */
public class TimingTest {
  private static final Schema ROWS =
      Schema.builder()
          .addInt64Field("id")
          .addArrayField("features", Schema.FieldType.DOUBLE)
          .addStringField("batch_size") // replaced by the timing field of that name
          .build();

  private static Model lr() {
    return Model.sklearn("lr", "lr.skops").withFormat(Format.SKOPS);
  }

  private static Row payloadRow(byte[] bytes) throws Exception {
    ExternalConfigurationPayload payload = ExternalConfigurationPayload.parseFrom(bytes);
    Schema schema = SchemaTranslation.schemaFromProto(payload.getSchema());
    return CoderUtils.decodeFromByteArray(RowCoder.of(schema), payload.getPayload().toByteArray());
  }

  @Test
  public void withTimingIsAnImmutableSettingOfEveryBuilder() {
    Model plain = lr();
    Model timed = plain.withTiming();
    assertFalse(plain.timing());
    assertTrue(timed.timing());
    assertNotEquals(plain, timed);
    assertEquals(plain.toCompactSpecJson(), timed.toCompactSpecJson()); // not part of the spec
    assertTrue(ABTest.of("ab", ABTest.Arm.of("a", lr())).withTiming().timing());
    assertTrue(Sequence.of("s", lr()).withTiming().timing());
    assertTrue(Keyed.of("k", Keyed.Route.of(lr(), "r")).withTiming().timing());
  }

  @Test
  public void timingOnANestedNodeIsRefused() {
    ABTest ab = ABTest.of("ab", ABTest.Arm.of("a", lr().withTiming()));
    SpecException e = org.junit.Assert.assertThrows(SpecException.class, ab::checkSpec);
    assertTrue(e.getMessage(), e.getMessage().contains("withTiming are set on a nested node"));
  }

  @Test
  public void thePayloadAsksForTimingOnlyWhenSet() throws Exception {
    Row plain = payloadRow(ExpansionPayload.encode("{}", null, null, false));
    assertEquals(List.of("spec", "features_field", "key_field"), plain.getSchema().getFieldNames());
    Row timed = payloadRow(ExpansionPayload.encode("{}", "pixels", null, true));
    assertEquals(
        List.of("spec", "features_field", "key_field", "timing"),
        timed.getSchema().getFieldNames());
    assertEquals(Schema.FieldType.STRING, timed.getSchema().getField("timing").getType());
    assertEquals("true", timed.getString("timing"));
    Row batches = payloadRow(ExpansionPayload.encodeBatches("{}", null, null, ROWS, true));
    assertEquals(
        List.of("spec", "features_field", "key_field", "transport", "input_schema", "timing"),
        batches.getSchema().getFieldNames());
    assertEquals("true", batches.getString("timing"));
    Row untimedBatches = payloadRow(ExpansionPayload.encodeBatches("{}", null, null, ROWS));
    assertFalse(untimedBatches.getSchema().hasField("timing"));
  }

  @Test
  public void resultsGainTheTimingFieldsLast() {
    Schema results = BatchTransport.resultsSchema(ROWS, true);
    assertEquals(
        List.of("id", "features", "model", "path", "inference", "label", "score", "labels",
            "scores", "model_ms", "batch_size"),
        results.getFieldNames());
    assertEquals(
        Schema.FieldType.array(Schema.FieldType.DOUBLE),
        results.getField(InferenceResult.MODEL_MS).getType());
    assertEquals(
        Schema.FieldType.array(Schema.FieldType.INT64),
        results.getField(InferenceResult.BATCH_SIZE).getType());
    assertTrue(BatchTransport.resultsSchema(ROWS, false).hasField("batch_size")); // the input's
  }

  @Test
  public void timedResultBatchesUnpackTheTimingColumns() throws Exception {
    Schema results = BatchTransport.resultsSchema(ROWS, true);
    UnpackResults.Results unpack = new UnpackResults.Results(ROWS, results, true);
    unpack.setup();
    RowCoder coder = RowCoder.of(ROWS);
    Schema.Builder builder =
        Schema.builder()
            .addArrayField("rows", Schema.FieldType.BYTES)
            .addArrayField("models", Schema.FieldType.STRING)
            .addArrayField("paths", Schema.FieldType.STRING);
    for (String column :
        List.of("node", "inference", "inference_lengths", "label", "label_set", "score",
            "score_set", "labels", "labels_lengths", "scores", "scores_lengths", "model_ms",
            "model_ms_lengths", "batch_size")) {
      builder.addByteArrayField(column);
    }
    Schema resultBatch = builder.build();
    Row batch =
        Row.withSchema(resultBatch)
            .addValues(
                List.of(
                    CoderUtils.encodeToByteArray(
                        coder, Row.withSchema(ROWS).addValues(1L, List.of(1.0), "x").build()),
                    CoderUtils.encodeToByteArray(
                        coder, Row.withSchema(ROWS).addValues(2L, List.of(2.0), "y").build())),
                List.of("a", "b"),
                List.of("ab/x/a", "ab/y/s/b"),
                ints(0, 1),
                doubles(0.5, 0.25),
                ints(1, 1),
                longs(0, 0),
                new byte[] {0, 0},
                doubles(0, 0),
                new byte[] {0, 0},
                new byte[0],
                ints(-1, -1),
                new byte[0],
                ints(-1, -1),
                doubles(0.125, 0.5, 0.75),
                ints(1, 2),
                longs(64, 32, 16))
            .build();
    List<Row> out = new ArrayList<>();
    unpack.processElement(batch, new Collect(out));
    assertEquals(2, out.size());
    assertEquals(List.of(0.125), new ArrayList<>(out.get(0).getArray("model_ms")));
    assertEquals(List.of(64L), new ArrayList<>(out.get(0).getArray("batch_size")));
    assertEquals(List.of(0.5, 0.75), new ArrayList<>(out.get(1).getArray("model_ms")));
    assertEquals(List.of(32L, 16L), new ArrayList<>(out.get(1).getArray("batch_size")));
    assertEquals(Long.valueOf(2), out.get(1).getInt64("id"));
  }

  private static final class Collect implements DoFn.OutputReceiver<Row> {
    private final List<Row> rows;

    Collect(List<Row> rows) {
      this.rows = rows;
    }

    @Override
    public void output(Row output) {
      rows.add(output);
    }

    @Override
    public void outputWithTimestamp(Row output, Instant timestamp) {
      rows.add(output);
    }
  }



}
