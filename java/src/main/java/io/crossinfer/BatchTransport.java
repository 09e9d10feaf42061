package io.crossinfer;

import java.util.List;
import java.util.UUID;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.windowing.GlobalWindows;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.Row;

/**
 * The batch transport ({@link Transport#BATCHES}, docs/wire-contract.md): rows go to the service
 * packed in batches and come back as result batches, which are unpacked here into the result and
 * failure rows the row transport would give.
 */
final class BatchTransport {
  /** Payload value of {@code transport}. */
  static final String NAME = "batches";

  /** What the service reads: one element per batch of rows. */
  static final Schema BATCH_SCHEMA =
      withId(
          Schema.builder()
              .addArrayField("rows", Schema.FieldType.BYTES)
              .addByteArrayField("features")
              .addStringField("dtype")
              .addByteArrayField("lengths")
              .addNullableField(
                  "keys", Schema.FieldType.array(Schema.FieldType.STRING.withNullable(true)))
              .build(),
          "2f0b1f7e-6d0c-4a57-9a55-0c3c61f2b101");

  /** Results fields the service adds after the input fields (see {@link InferenceResult}). */
  static final List<String> OUTPUT_FIELDS =
      List.of(
          InferenceResult.MODEL,
          InferenceResult.PATH,
          InferenceResult.INFERENCE,
          InferenceResult.LABEL,
          InferenceResult.SCORE,
          InferenceResult.LABELS,
          InferenceResult.SCORES);

  /** Results fields the service adds after {@link #OUTPUT_FIELDS} with timing. */
  static final List<String> TIMING_FIELDS =
      List.of(InferenceResult.MODEL_MS, InferenceResult.BATCH_SIZE);

  private BatchTransport() {}

  /** Whether {@code input} goes in batches: as asked, else where its input allows it. */
  static boolean applies(PCollection<Row> input, InferenceTransform.Io io, String description) {
    boolean allowed =
        input.isBounded() == PCollection.IsBounded.BOUNDED
            && input.getWindowingStrategy().getWindowFn() instanceof GlobalWindows;
    if (io.transport == Transport.BATCHES && !allowed) {
      throw new IllegalArgumentException(
          description
              + ": withTransport(BATCHES) needs bounded input in the global window; this input"
              + " is "
              + (input.isBounded() == PCollection.IsBounded.BOUNDED ? "bounded" : "unbounded")
              + " with "
              + input.getWindowingStrategy().getWindowFn()
              + " (leave the default, or use withTransport(ROWS))");
    }
    return io.transport == null ? allowed : io.transport == Transport.BATCHES;
  }

  /** {@code input}'s rows as batches, for the service. */
  static PCollection<Row> pack(PCollection<Row> input, String featuresField, String keyField) {
    return input
        .apply("PackBatches", ParDo.of(new PackRows(input.getSchema(), featuresField, keyField)))
        .setRowSchema(BATCH_SCHEMA);
  }

  /**
   * The service's result batches as result rows of {@link #resultsSchema} (with the timing
   * fields, read from the batches' timing columns, when {@code timing}).
   */
  static PCollection<Row> unpackResults(PCollection<Row> batches, Schema input, boolean timing) {
    Schema results = resultsSchema(input, timing);
    return batches
        .apply("UnpackResults", ParDo.of(new UnpackResults.Results(input, results, timing)))
        .setRowSchema(results);
  }

  /** The fields a result row adds to its input row's: the output fields, then any timing ones. */
  static List<String> addedFields(boolean timing) {
    if (!timing) {
      return OUTPUT_FIELDS;
    }
    List<String> added = new java.util.ArrayList<>(OUTPUT_FIELDS);
    added.addAll(TIMING_FIELDS);
    return added;
  }

  /** The service's failure rows (the row as bytes) as failure rows of {@link #failuresSchema}. */
  static PCollection<Row> unpackFailures(PCollection<Row> failures, Schema input) {
    Schema schema = failuresSchema(input);
    return failures
        .apply("UnpackFailures", ParDo.of(new UnpackResults.Failures(input, schema)))
        .setRowSchema(schema);
  }

  /** The input fields (minus any named like an output field), then the output fields. */
  static Schema resultsSchema(Schema input) {
    return resultsSchema(input, false);
  }

  /**
   * The input fields (minus any named like an added field), then the output fields, then with
   * {@code timing} {@code model_ms} (ARRAY&lt;DOUBLE&gt;) and {@code batch_size}
   * (ARRAY&lt;INT64&gt;).
   */
  static Schema resultsSchema(Schema input, boolean timing) {
    List<String> added = addedFields(timing);
    Schema.Builder builder = Schema.builder();
    for (Schema.Field field : input.getFields()) {
      if (!added.contains(field.getName())) {
        builder.addField(field);
      }
    }
    builder
        .addStringField(InferenceResult.MODEL)
        .addStringField(InferenceResult.PATH)
        .addArrayField(InferenceResult.INFERENCE, Schema.FieldType.DOUBLE)
        .addNullableField(InferenceResult.LABEL, Schema.FieldType.INT64)
        .addNullableField(InferenceResult.SCORE, Schema.FieldType.DOUBLE)
        .addNullableField(InferenceResult.LABELS, Schema.FieldType.array(Schema.FieldType.INT64))
        .addNullableField(
            InferenceResult.SCORES, Schema.FieldType.array(Schema.FieldType.DOUBLE));
    if (timing) {
      builder
          .addArrayField(InferenceResult.MODEL_MS, Schema.FieldType.DOUBLE)
          .addArrayField(InferenceResult.BATCH_SIZE, Schema.FieldType.INT64);
    }
    return withId(builder.build(), UUID.randomUUID().toString());
  }

  /** {@code element} (the input row), {@code node}, {@code error}. */
  static Schema failuresSchema(Schema input) {
    return withId(
        Schema.builder()
            .addRowField(InferenceResult.ELEMENT, input)
            .addStringField(InferenceResult.NODE)
            .addStringField(InferenceResult.ERROR)
            .build(),
        UUID.randomUUID().toString());
  }

  private static Schema withId(Schema schema, String id) {
    schema.setUUID(UUID.fromString(id));
    return schema;
  }
}
