package io.crossinfer;

import static io.crossinfer.LittleEndian.doubles;
import static io.crossinfer.LittleEndian.ints;
import static io.crossinfer.LittleEndian.longs;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.beam.runners.portability.PortableRunner;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.windowing.FixedWindows;
import org.apache.beam.sdk.transforms.windowing.Window;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;
import org.joda.time.Duration;
import org.joda.time.Instant;
import org.junit.Test;

/** The Java half of the batch transport, without a service: packing, unpacking, choosing. */
public class BatchTransportTest {
  private static final Schema ROWS =
      Schema.builder()
          .addInt64Field("id")
          .addNullableField("key", Schema.FieldType.STRING)
          .addNullableField(
              "features", Schema.FieldType.array(Schema.FieldType.DOUBLE.withNullable(true)))
          .addStringField("model") // replaced by the output field of that name
          .build();

  private static Row row(long id, List<Double> features) {
    return Row.withSchema(ROWS).addValues(id, "k" + id, features, "mine").build();
  }

  /** Collects what a DoFn outputs. */
  private static final class Collected implements DoFn.OutputReceiver<Row> {
    final List<Row> rows = new ArrayList<>();

    @Override
    public void output(Row output) {
      rows.add(output);
    }

    @Override
    public void outputWithTimestamp(Row output, Instant timestamp) {
      rows.add(output);
    }
  }

  @Test
  public void fullBatchesCarryEachRowItsFeaturesAndKey() throws Exception {
    PackRows pack = new PackRows(ROWS, "features", "key");
    pack.setup();
    pack.startBundle();
    Collected out = new Collected();
    List<Row> rows = new ArrayList<>();
    for (int i = 0; i < PackRows.MAX_ROWS; i++) {
      Row r = i == 3 ? row(i, Arrays.asList(1.0, null)) : row(i, List.of((double) i, 0.5));
      rows.add(r);
      pack.processElement(r, out);
    }
    assertEquals("one batch, sent as it filled", 1, out.rows.size());
    Row batch = out.rows.get(0);
    assertEquals("<f8", batch.getString("dtype"));
    List<byte[]> encoded = new ArrayList<>(batch.<byte[]>getArray("rows"));
    assertEquals(rows.get(7), CoderUtils.decodeFromByteArray(RowCoder.of(ROWS), encoded.get(7)));
    ByteBuffer lengths = ByteBuffer.wrap(batch.getBytes("lengths")).order(ByteOrder.LITTLE_ENDIAN);
    assertEquals(2, lengths.getInt(0));
    assertEquals("a null value: unpacked, for the service to fail", -1, lengths.getInt(3 * 4));
    ByteBuffer values = ByteBuffer.wrap(batch.getBytes("features")).order(ByteOrder.LITTLE_ENDIAN);
    assertEquals((PackRows.MAX_ROWS - 1) * 2 * 8, values.capacity());
    assertEquals(4.0, values.getDouble(3 * 16), 0); // row 4: row 3 took no values
    assertEquals("k5", new ArrayList<>(batch.<String>getArray("keys")).get(5));
  }

  @Test
  public void resultBatchesBecomeTheRowTransportsRows() throws Exception {
    Schema results = BatchTransport.resultsSchema(ROWS);
    assertEquals(
        List.of("id", "key", "features", "model", "path", "inference", "label", "score", "labels",
            "scores"),
        results.getFieldNames());
    UnpackResults.Results unpack = new UnpackResults.Results(ROWS, results);
    unpack.setup();
    RowCoder coder = RowCoder.of(ROWS);
    Schema resultBatch =
        Schema.builder()
            .addArrayField("rows", Schema.FieldType.BYTES)
            .addArrayField("models", Schema.FieldType.STRING)
            .addArrayField("paths", Schema.FieldType.STRING)
            .addByteArrayField("node")
            .addByteArrayField("inference")
            .addByteArrayField("inference_lengths")
            .addByteArrayField("label")
            .addByteArrayField("label_set")
            .addByteArrayField("score")
            .addByteArrayField("score_set")
            .addByteArrayField("labels")
            .addByteArrayField("labels_lengths")
            .addByteArrayField("scores")
            .addByteArrayField("scores_lengths")
            .build();
    Row batch =
        Row.withSchema(resultBatch)
            .addValues(
                List.of(
                    CoderUtils.encodeToByteArray(coder, row(1, List.of(1.0))),
                    CoderUtils.encodeToByteArray(coder, row(2, List.of(2.0)))),
                List.of("a", "b"),
                List.of("ab/x/a", "ab/y/b"),
                ints(1, 0),
                doubles(0.25, 0.75, 0.5),
                ints(2, 1),
                longs(0, 7),
                new byte[] {0, 1},
                doubles(0, 0.9),
                new byte[] {0, 1},
                longs(3, 4),
                ints(-1, 2),
                new byte[0],
                ints(-1, -1))
            .build();
    Collected out = new Collected();
    unpack.processElement(batch, out);
    assertEquals(2, out.rows.size());
    Row first = out.rows.get(0);
    assertEquals(Long.valueOf(1), first.getInt64("id"));
    assertEquals("b", first.getString("model"));
    assertEquals("ab/y/b", first.getString("path"));
    assertEquals(List.of(0.25, 0.75), new ArrayList<>(first.getArray("inference")));
    assertNull(first.getInt64("label"));
    assertNull(first.getArray("labels"));
    Row second = out.rows.get(1);
    assertEquals("k2", second.getString("key"));
    assertEquals(List.of(0.5), new ArrayList<>(second.getArray("inference")));
    assertEquals(Long.valueOf(7), second.getInt64("label"));
    assertEquals(0.9, second.getDouble("score"), 0);
    assertEquals(List.of(3L, 4L), new ArrayList<>(second.getArray("labels")));
    assertNull(second.getArray("scores"));
  }

  @Test
  public void packedFloatBytesTravelAsTheyAre() throws Exception {
    Schema packed =
        Schema.builder().addInt64Field("id").addField(PackedFeatures.field("features")).build();
    PackRows pack = new PackRows(packed, "features", "key");
    pack.setup();
    pack.startBundle();
    Collected out = new Collected();
    for (int i = 0; i < PackRows.MAX_ROWS; i++) {
      byte[] bytes = i == 0 ? new byte[5] : PackedFeatures.pack(new float[] {i, -i});
      pack.processElement(Row.withSchema(packed).addValues((long) i, bytes).build(), out);
    }
    Row batch = out.rows.get(0);
    assertEquals("<f4", batch.getString("dtype"));
    assertNull("no key field, no keys", batch.getValue("keys"));
    byte[] features = batch.getBytes("features");
    assertArrayEquals(
        PackedFeatures.pack(new float[] {1, -1}), Arrays.copyOfRange(features, 0, 8));
    assertEquals(-1, ByteBuffer.wrap(batch.getBytes("lengths")).order(ByteOrder.LITTLE_ENDIAN)
        .getInt(0));
  }

  @Test
  public void batchesAreForBoundedInputInTheGlobalWindow() {
    PortablePipelineOptions options =
        PipelineOptionsFactory.create().as(PortablePipelineOptions.class);
    options.setRunner(PortableRunner.class);
    options.setJobEndpoint("localhost:1"); // never called: nothing runs
    Pipeline p = Pipeline.create(options);
    PCollection<Row> global = p.apply(Create.of(row(1, List.of(1.0))).withRowSchema(ROWS));
    PCollection<Row> windowed =
        global.apply(Window.into(FixedWindows.of(Duration.standardSeconds(10))));
    InferenceTransform.Io io = InferenceTransform.Io.DEFAULT;
    assertTrue(BatchTransport.applies(global, io, "m"));
    assertTrue(!BatchTransport.applies(windowed, io, "m"));
    assertTrue(!BatchTransport.applies(global, io.withTransport(Transport.ROWS), "m"));
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () ->
                BatchTransport.applies(
                    windowed, io.withTransport(Transport.BATCHES), "model 'm'"));
    assertTrue(e.getMessage(), e.getMessage().contains("needs bounded input in the global window"));
  }



}
