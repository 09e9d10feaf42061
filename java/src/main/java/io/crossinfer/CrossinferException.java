package io.crossinfer;

/** Base class of the exceptions crossinfer throws at pipeline construction. */
public class CrossinferException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  CrossinferException(String message) {
    super(message);
  }

  CrossinferException(String message, Throwable cause) {
    super(message, cause);
  }
}
