package io.crossinfer;

import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsRegistrar;

/**
 * Pipeline options for crossinfer transforms. {@code --crossinferExpansionService=host:port} is
 * used by every crossinfer transform that was not given {@code withExpansionService(address)}.
 */
public interface CrossinferOptions extends PipelineOptions {
  @Description(
      "host:port of the crossinfer expansion service, used by crossinfer transforms that were not"
          + " given withExpansionService(...)")
  String getCrossinferExpansionService();

  void setCrossinferExpansionService(String address);

  /**
   * Registers {@link CrossinferOptions} so {@code --crossinferExpansionService} parses (listed in
   * {@code META-INF/services}).
   */
  final class Registrar implements PipelineOptionsRegistrar {
    @Override
    public Iterable<Class<? extends PipelineOptions>> getPipelineOptions() {
      return java.util.List.of(CrossinferOptions.class);
    }
  }
}
