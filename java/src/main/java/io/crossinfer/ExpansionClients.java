package io.crossinfer;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.apache.beam.model.expansion.v1.ExpansionApi;
import org.apache.beam.model.expansion.v1.ExpansionServiceGrpc;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.model.pipeline.v1.SchemaApi;
import org.apache.beam.sdk.util.construction.ExpansionServiceClient;
import org.apache.beam.sdk.util.construction.ExpansionServiceClientFactory;
import org.apache.beam.vendor.grpc.v1p69p0.com.google.protobuf.InvalidProtocolBufferException;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.ManagedChannel;
import org.apache.beam.vendor.grpc.v1p69p0.io.grpc.ManagedChannelBuilder;

/**
 * The expansion service client crossinfer transforms use instead of {@code External}'s default:
 *
 * <ul>
 *   <li>every call has a deadline, so a hung service fails the construction instead of hanging
 *       it;
 *   <li>channels are shared per address for the life of the JVM;
 *   <li>schema ids in the returned row coders that are not UUIDs are mapped to name-based UUIDs:
 *       Beam Java parses every schema id as a UUID ({@code SchemaTranslation.schemaFromProto}),
 *       while Beam Python accepts any string, so a Python service with readable ids (say {@code
 *       crossinfer-results-...}) would otherwise fail with "UUID string too large".
 * </ul>
 */
final class ExpansionClients implements ExpansionServiceClientFactory {
  private static final String ROW_CODER_URN = "beam:coder:row:v1";
  private static final Map<String, ManagedChannel> CHANNELS = new ConcurrentHashMap<>();

  private final long deadlineSeconds;

  ExpansionClients(long deadlineSeconds) {
    this.deadlineSeconds = deadlineSeconds;
  }

  @Override
  public ExpansionServiceClient getExpansionServiceClient(Endpoints.ApiServiceDescriptor endpoint) {
    ManagedChannel channel =
        CHANNELS.computeIfAbsent(
            endpoint.getUrl(),
            url ->
                ManagedChannelBuilder.forTarget(url)
                    .usePlaintext()
                    .maxInboundMessageSize(Integer.MAX_VALUE)
                    .build());
    return new ExpansionServiceClient() {
      @Override
      public ExpansionApi.ExpansionResponse expand(ExpansionApi.ExpansionRequest request) {
        ExpansionApi.ExpansionResponse response =
            ExpansionServiceGrpc.newBlockingStub(channel)
                .withDeadlineAfter(deadlineSeconds, TimeUnit.SECONDS)
                .expand(request);
        return withUuidSchemaIds(response);
      }

      @Override
      public ExpansionApi.DiscoverSchemaTransformResponse discover(
          ExpansionApi.DiscoverSchemaTransformRequest request) {
        return ExpansionServiceGrpc.newBlockingStub(channel)
            .withDeadlineAfter(deadlineSeconds, TimeUnit.SECONDS)
            .discoverSchemaTransform(request);
      }

      @Override
      public void close() {
        // Channels are shared; they live as long as the JVM.
      }
    };
  }

  @Override
  public void close() {}

  static ExpansionApi.ExpansionResponse withUuidSchemaIds(ExpansionApi.ExpansionResponse response) {
    if (!response.hasComponents()) {
      return response;
    }
    RunnerApi.Components.Builder components = response.getComponents().toBuilder();
    boolean changed = false;
    for (Map.Entry<String, RunnerApi.Coder> entry :
        response.getComponents().getCodersMap().entrySet()) {
      RunnerApi.Coder coder = entry.getValue();
      if (!ROW_CODER_URN.equals(coder.getSpec().getUrn())) {
        continue;
      }
      SchemaApi.Schema schema;
      try {
        schema = SchemaApi.Schema.parseFrom(coder.getSpec().getPayload());
      } catch (InvalidProtocolBufferException e) {
        continue; // Not ours to judge; Beam reports it.
      }
      SchemaApi.Schema fixed = fixSchema(schema);
      if (!fixed.equals(schema)) {
        changed = true;
        components.putCoders(
            entry.getKey(),
            coder.toBuilder()
                .setSpec(coder.getSpec().toBuilder().setPayload(fixed.toByteString()))
                .build());
      }
    }
    return changed ? response.toBuilder().setComponents(components).build() : response;
  }

  private static SchemaApi.Schema fixSchema(SchemaApi.Schema schema) {
    SchemaApi.Schema.Builder builder = schema.toBuilder();
    if (!schema.getId().isEmpty() && !isUuid(schema.getId())) {
      builder.setId(
          UUID.nameUUIDFromBytes(schema.getId().getBytes(StandardCharsets.UTF_8)).toString());
    }
    for (int i = 0; i < schema.getFieldsCount(); i++) {
      SchemaApi.Field field = schema.getFields(i);
      builder.setFields(i, field.toBuilder().setType(fixType(field.getType())));
    }
    return builder.build();
  }

  private static SchemaApi.FieldType fixType(SchemaApi.FieldType type) {
    SchemaApi.FieldType.Builder b = type.toBuilder();
    switch (type.getTypeInfoCase()) {
      case ROW_TYPE:
        b.setRowType(type.getRowType().toBuilder().setSchema(fixSchema(type.getRowType().getSchema())));
        break;
      case ARRAY_TYPE:
        b.setArrayType(
            type.getArrayType().toBuilder()
                .setElementType(fixType(type.getArrayType().getElementType())));
        break;
      case ITERABLE_TYPE:
        b.setIterableType(
            type.getIterableType().toBuilder()
                .setElementType(fixType(type.getIterableType().getElementType())));
        break;
      case MAP_TYPE:
        b.setMapType(
            type.getMapType().toBuilder()
                .setKeyType(fixType(type.getMapType().getKeyType()))
                .setValueType(fixType(type.getMapType().getValueType())));
        break;
      default:
        break;
    }
    return b.build();
  }

  private static boolean isUuid(String id) {
    if (id.length() != 36) {
      return false;
    }
    try {
      UUID.fromString(id);
      return true;
    } catch (IllegalArgumentException e) {
      return false;
    }
  }
}
