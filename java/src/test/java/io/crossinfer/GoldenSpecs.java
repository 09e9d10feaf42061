package io.crossinfer;

import java.util.List;
import java.util.Map;

/**
 * The specs of {@code tests/golden/*.json}, built with the Java builders. The Python suite
 * builds the same documents with the Python dataclasses; both must match the files.
 */
final class GoldenSpecs {
  private GoldenSpecs() {}

  static final String ZEROS = "0".repeat(64);

  static Model digitsLr() {
    return Model.sklearn("digits_lr", "models/digits_lr.pkl")
        .withMethod(SklearnMethod.PREDICT_PROBA)
        .withPreprocess(Op.scale(0.0625))
        .withPostprocess(Op.argmax())
        .withSha256(ZEROS);
  }

  static Model digitsMlp() {
    return Model.pytorch("digits_mlp", "models/digits_mlp.pt")
        .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(64, 64, 10)))
        .withPreprocess(Op.scale(0.0625))
        .withPostprocess(Op.softmax(), Op.argmax());
  }

  static Model digitsOnnx() {
    return Model.onnx("digits_onnx", "models/digits_mlp.onnx")
        .withDevice(Device.GPU)
        .withPostprocess(Op.sigmoid(), Op.flatten());
  }

  static Model digitsLrJoblib() {
    return Model.sklearn("digits_lr_joblib", "models/digits_lr.joblib").withFormat(Format.JOBLIB);
  }

  static Sequence digitsSeq() {
    return Sequence.of(
        "digits_seq",
        Model.sklearn("digits_pca", "models/digits_pca.pkl")
            .withMethod(SklearnMethod.TRANSFORM)
            .withPreprocess(Op.scale(0.0625)),
        Model.pytorch("digits_pca_mlp", "models/digits_pca_mlp.pt")
            .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(16, 32, 10)))
            .withPostprocess(Op.softmax(), Op.argmax()));
  }

  /** Every golden file name and the Java-built spec it must equal. */
  static Map<String, Node> all() {
    return Map.of(
        "ab_hash.json",
        ABTest.of(
                "digits_ab",
                ABTest.Arm.of("control", 90, digitsLr()),
                ABTest.Arm.of("treatment", 10, digitsMlp()))
            .withHashSplit("digits-2026"),
        "ab_mirror_nested.json",
        ABTest.of("shadow", ABTest.Arm.of("current", digitsLr()),
                ABTest.Arm.of("candidate", digitsSeq()))
            .withMirror(),
        "keyed.json",
        Keyed.of("digits_keyed", Keyed.Route.of(digitsLr(), "sklearn"))
            .withRoute(digitsMlp(), "torch", "pytorch")
            .withRoute(digitsOnnx(), "onnx")
            .withDefault(digitsLrJoblib())
            .withMaxModelsPerWorker(2),
        "model_all_fields.json",
        Model.pytorch("full_model", "gs://bucket/models/model.ts")
            .withFormat(Format.TORCHSCRIPT)
            .withInferenceArgs(orderedMap("temperature", 2.0, "mode", "fast"))
            .withOutput("logits")
            .withDevice(Device.AUTO)
            .withInputShape(64)
            .withBatching(8, 128, 0.5)
            .withLargeModel(true)
            .withModelCopies(2)
            .withPreprocess(
                Op.cast("float32"), Op.padTruncate(64, 0.0), Op.normalize(8.0, 4.0), Op.reshape(64))
            .withPostprocess(Op.softmax(), Op.topK(3), Op.threshold(0.9, 0))
            .withSha256("ab".repeat(32)),
        "model_frameworks_ab.json",
        ABTest.of(
                "frameworks",
                ABTest.Arm.of("onnx", digitsOnnx()),
                ABTest.Arm.of(
                    "trt",
                    Model.tensorRt("digits_trt", "models/digits.engine")
                        .withDevice(Device.GPU)
                        .withBatching(1, 64)),
                ABTest.Arm.of(
                    "custom",
                    Model.custom(
                        "my_custom",
                        "models/custom.bin",
                        "mycompany.handlers:MyHandler",
                        orderedMap("threshold", 0.5, "name", "x"))
                        .withOutput(1)),
                ABTest.Arm.of("joblib", 2, digitsLrJoblib()))
            .withRandomSplit(42),
        "sequence.json",
        digitsSeq());
  }

  static Map<String, Object> orderedMap(Object... keyValues) {
    Map<String, Object> out = new java.util.LinkedHashMap<>();
    for (int i = 0; i < keyValues.length; i += 2) {
      out.put((String) keyValues[i], keyValues[i + 1]);
    }
    return out;
  }
}
