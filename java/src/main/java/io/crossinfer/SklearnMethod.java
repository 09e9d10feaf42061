package io.crossinfer;

/** The scikit-learn estimator method a {@link Model} calls; the spec's {@code method} field. */
public enum SklearnMethod {
  /** {@code estimator.predict(x)} (the default). */
  PREDICT("predict"),
  /** {@code estimator.predict_proba(x)}: class probabilities. */
  PREDICT_PROBA("predict_proba"),
  /** {@code estimator.decision_function(x)}: raw scores. */
  DECISION_FUNCTION("decision_function"),
  /** {@code estimator.transform(x)}: for transformers such as PCA. */
  TRANSFORM("transform");

  private final String specName;

  SklearnMethod(String specName) {
    this.specName = specName;
  }

  /** The name used in the spec JSON, e.g. {@code "predict_proba"}. */
  public String specName() {
    return specName;
  }
}
