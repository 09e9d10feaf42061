package io.crossinfer;

/**
 * How a crossinfer transform sends its input rows to the Python workers and gets their results
 * back. Both give the same results, failures and schemas; they differ in cost.
 *
 * <p>The default is {@link #BATCHES} where the input allows it (bounded, in the global window) and
 * {@link #ROWS} otherwise; {@link InferenceTransform#withTransport(Transport)} picks one.
 */
public enum Transport {
  /**
   * One Beam element per row, each way: every row is encoded, moved by the runner and decoded
   * field by field on both sides. Works for any input, streaming and windowed included.
   */
  ROWS,
  /**
   * Several hundred rows per element, each way (docs/wire-contract.md, <i>Batch transport</i>):
   * the features travel as one packed array per batch, the rows as opaque bytes that come back
   * with their results, so the runner moves and the workers decode one element per batch. For
   * bounded input in the global window, where the timestamps of results are the end of the window
   * either way; other input is refused with this transport.
   */
  BATCHES
}
