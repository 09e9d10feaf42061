package io.crossinfer;

import java.util.List;
import java.util.stream.Collectors;
import org.apache.beam.sdk.options.PortablePipelineOptions;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.util.construction.External;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PCollectionTuple;
import org.apache.beam.sdk.values.Row;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.Status;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.StatusRuntimeException;

/**
 * Checks the input, calls the expansion service and unpacks its two outputs; under the batch
 * transport ({@link BatchTransport}) packs the rows first and unpacks the result batches after.
 */
final class Expander {
  private static final String SERVICE_ERROR_PREFIX = "expansion service error: ";
  private static final String LOOPBACK_PLACEHOLDER = "localhost:0";
  /** Deadline of one expansion call: generous, the service imports frameworks on first use. */
  private static final ExpansionClients CLIENTS = new ExpansionClients(300);

  private Expander() {}

  static InferenceResult expand(
      PCollection<Row> input,
      String urn,
      String description,
      String specJson,
      InferenceTransform.Io io,
      boolean needsKey) {
    String address = io.expansionService;
    if (address == null) {
      address =
          input.getPipeline().getOptions().as(CrossinferOptions.class)
              .getCrossinferExpansionService();
    }
    if (address == null || address.isBlank()) {
      throw new IllegalArgumentException(
          description
              + ": no expansion service: call withExpansionService(\"host:port\") or pass"
              + " --crossinferExpansionService=host:port (ExpansionServiceLauncher starts a local"
              + " one)");
    }
    String featuresField =
        io.featuresField != null ? io.featuresField : InferenceTransform.DEFAULT_FEATURES_FIELD;
    String keyField = io.keyField != null ? io.keyField : InferenceTransform.DEFAULT_KEY_FIELD;
    checkInput(input, description, featuresField, keyField, needsKey);
    boolean batches = BatchTransport.applies(input, io, description);
    byte[] payload =
        batches
            ? ExpansionPayload.encodeBatches(
                specJson, io.featuresField, io.keyField, input.getSchema(), io.timing)
            : ExpansionPayload.encode(specJson, io.featuresField, io.keyField, io.timing);
    PCollection<Row> sent = batches ? BatchTransport.pack(input, featuresField, keyField) : input;
    PCollectionTuple outputs = external(sent, urn, payload, address, description);
    for (String tag : List.of(InferenceResult.RESULTS_TAG, InferenceResult.FAILURES_TAG)) {
      if (!outputs.has(tag)) {
        throw new CrossinferException(
            "the expansion service at "
                + address
                + " returned outputs "
                + outputs.getAll().keySet().stream()
                    .map(t -> "'" + t.getId() + "'")
                    .collect(Collectors.joining(", "))
                + " for "
                + description
                + "; wire contract v1 needs 'results' and 'failures' (is it a crossinfer"
                + " expansion service of the same version?)");
      }
    }
    PCollection<Row> results = outputs.get(InferenceResult.RESULTS_TAG);
    PCollection<Row> failures = outputs.get(InferenceResult.FAILURES_TAG);
    if (batches) {
      results = BatchTransport.unpackResults(results, input.getSchema(), io.timing);
      failures = BatchTransport.unpackFailures(failures, input.getSchema());
    }
    return new InferenceResult(input.getPipeline(), results, failures, specJson, address);
  }

  /**
   * Expands {@code urn} with {@code payload} at the service at {@code address} over {@code input},
   * translating the service's refusals into {@link ExpansionException}s.
   */
  static PCollectionTuple external(
      PCollection<Row> input, String urn, byte[] payload, String address, String description) {
    PortablePipelineOptions portable =
        input.getPipeline().getOptions().as(PortablePipelineOptions.class);
    boolean loopbackPlaceholder = needsLoopbackPlaceholder(portable);
    try {
      if (loopbackPlaceholder) {
        portable.setDefaultEnvironmentConfig(LOOPBACK_PLACEHOLDER);
      }
      return input.apply(
          "Expand " + urn,
          External.<PCollection<Row>, Row>of(urn, payload, address, CLIENTS).withMultiOutputs());
    } catch (RuntimeException e) {
      throw translate(e, description, address);
    } finally {
      if (loopbackPlaceholder) {
        portable.setDefaultEnvironmentConfig(null);
      }
    }
  }

  /**
   * With {@code --defaultEnvironmentType=LOOPBACK} the PortableRunner learns the address of the
   * in-process Java worker only in {@code run()}, but Beam's {@code External} describes the Java
   * environment to the expansion service at construction and fails without an address. The
   * request gets a placeholder; {@code run()} then sets the real address, which is what the
   * submitted pipeline uses.
   */
  private static boolean needsLoopbackPlaceholder(PortablePipelineOptions options) {
    if (!"LOOPBACK".equals(options.getDefaultEnvironmentType())
        || options.getDefaultEnvironmentConfig() != null) {
      return false;
    }
    List<String> envOptions = options.getEnvironmentOptions();
    return envOptions == null
        || envOptions.stream().noneMatch(o -> o.startsWith("external_service_address="));
  }

  private static RuntimeException translate(
      RuntimeException e, String description, String address) {
    for (Throwable t = e; t != null; t = t.getCause()) {
      String message = t.getMessage();
      if (message != null && message.startsWith(SERVICE_ERROR_PREFIX)) {
        return new ExpansionException(
            description, address, message.substring(SERVICE_ERROR_PREFIX.length()).strip(), e);
      }
      if (t instanceof StatusRuntimeException) {
        Status.Code code = ((StatusRuntimeException) t).getStatus().getCode();
        if (code == Status.Code.UNAVAILABLE || code == Status.Code.DEADLINE_EXCEEDED) {
          return ExpansionException.unreachable(description, address, t);
        }
        return new ExpansionException(description, address, String.valueOf(message), e);
      }
    }
    return e;
  }

  private static void checkInput(
      PCollection<Row> input,
      String description,
      String features,
      String key,
      boolean needsKey) {
    if (!input.hasSchema()) {
      throw new IllegalArgumentException(
          description
              + " takes a PCollection<Row> with a schema, got one with coder "
              + input.getCoder()
              + "; give it one with .setRowSchema(schema) or Create.of(rows).withRowSchema(schema)");
    }
    Schema schema = input.getSchema();
    if (!schema.hasField(features)) {
      throw new IllegalArgumentException(
          "withFeaturesField: the input schema has no field '"
              + features
              + "' (fields: "
              + String.join(", ", schema.getFieldNames())
              + "); name the numeric array field with withFeaturesField(...)");
    }
    Schema.FieldType type = schema.getField(features).getType();
    Schema.TypeName typeName = type.getTypeName();
    Schema.FieldType element =
        typeName == Schema.TypeName.ARRAY || typeName == Schema.TypeName.ITERABLE
            ? type.getCollectionElementType()
            : null;
    boolean arrayOfNumbers =
        element != null
            && element.getTypeName().isNumericType()
            && element.getTypeName() != Schema.TypeName.DECIMAL;
    boolean packed = typeName == Schema.TypeName.BYTES; // see PackedFeatures
    if (!arrayOfNumbers && !packed) {
      throw new IllegalArgumentException(
          "withFeaturesField: input field '"
              + features
              + "' must be an ARRAY (or ITERABLE) of DOUBLE, FLOAT or an integer type, or BYTES"
              + " of packed float32 values (PackedFeatures), got "
              + type);
    }
    if (schema.hasField(key)) {
      if (schema.getField(key).getType().getTypeName() != Schema.TypeName.STRING) {
        throw new IllegalArgumentException(
            "withKeyField: input field '" + key + "' must be a STRING, got "
                + schema.getField(key).getType());
      }
    } else if (needsKey) {
      throw new IllegalArgumentException(
          "withKeyField: the spec routes or splits by key, but the input schema has no field '"
              + key
              + "' (fields: "
              + String.join(", ", schema.getFieldNames())
              + "); name the STRING key field with withKeyField(...)");
    }
  }
}
