package io.crossinfer;

/**
 * The crossinfer expansion service refused the transform, or could not be reached. Thrown at
 * pipeline construction, when the transform is applied.
 *
 * <p>The message is the service's own, e.g. {@code "node.arms[0].node.uri: no such file
 * 'models/lr.pkl'"}; {@link #serviceMessage()} returns it without the prefix this exception adds.
 */
public class ExpansionException extends CrossinferException {
  private static final long serialVersionUID = 1L;

  private final String serviceMessage;
  private final String address;

  ExpansionException(String transform, String address, String serviceMessage, Throwable cause) {
    super(
        "crossinfer expansion service at "
            + address
            + " refused "
            + transform
            + ": "
            + serviceMessage,
        cause);
    this.serviceMessage = serviceMessage;
    this.address = address;
  }

  private ExpansionException(String message, String address, Throwable cause) {
    super(message, cause);
    this.serviceMessage = message;
    this.address = address;
  }

  static ExpansionException unreachable(String transform, String address, Throwable cause) {
    return new ExpansionException(
        "cannot reach the crossinfer expansion service at "
            + address
            + " to expand "
            + transform
            + " ("
            + cause.getMessage()
            + "); start one with ExpansionServiceLauncher or `python -m crossinfer.expansion"
            + " --port N`, and pass its address to withExpansionService(...)",
        address,
        cause);
  }

  /** What the service said, without the prefix added here. */
  public String serviceMessage() {
    return serviceMessage;
  }

  /** The address of the expansion service that was called. */
  public String address() {
    return address;
  }
}
