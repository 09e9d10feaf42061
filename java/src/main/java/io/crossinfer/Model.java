package io.crossinfer;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * One model: the spec's {@code model} node, and a transform that runs it.
 *
 * <p>Start from the framework's factory ({@link #pytorch}, {@link #onnx}, {@link #sklearn},
 * {@link #tensorRt}, {@link #custom}), then refine with {@code withX} methods; each returns a new
 * instance, the original is unchanged. The model file is read by the expansion service's workers:
 * {@code uri} is a path on their machine or any Beam FileSystems URI ({@code gs://...}).
 *
 * <pre>{@code
 * Model mlp = Model.pytorch("digits_mlp", "/models/digits_mlp.pt")
 *     .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(64, 64, 10)))
 *     .withDevice(Device.AUTO)
 *     .withBatching(8, 256, 0.5)
 *     .withPreprocess(Op.scale(1.0 / 16))
 *     .withPostprocess(Op.softmax(), Op.argmax());
 *
 * InferenceResult result = rows.apply(mlp.withExpansionService("localhost:8097"));
 * }</pre>
 *
 * <p>Arguments are checked when given ({@link IllegalArgumentException} naming the setting);
 * combinations (a {@code model_class} without the {@code state_dict} format, say) when the spec is
 * encoded or applied ({@link SpecException} with the field path). The service checks the rest
 * (the file exists, the class is allow-listed) when the pipeline is built.
 */
public final class Model extends InferenceTransform<Model> {
  private static final long serialVersionUID = 1L;

  private static final Pattern IMPORT_PATH =
      Pattern.compile(
          "^[A-Za-z_][\\w]*(\\.[A-Za-z_][\\w]*)*:[A-Za-z_][\\w]*(\\.[A-Za-z_][\\w]*)*$");
  private static final Pattern SHA256 = Pattern.compile("^[0-9a-f]{64}$");
  private static final Pattern DTYPE = Pattern.compile("^[A-Za-z0-9_<>=|]+$");
  private static final Pattern KEYWORD = Pattern.compile("^[A-Za-z_][A-Za-z0-9_]*$");

  /** Every setting, in spec order; copied before each change. */
  private static final class Fields implements Serializable, Cloneable {
    private static final long serialVersionUID = 1L;
    String name;
    Framework framework;
    @Nullable String uri;
    @Nullable Format format;
    @Nullable String modelClass;
    Map<String, Object> modelParams = Map.of();
    @Nullable String handlerClass;
    Map<String, Object> handlerParams = Map.of();
    @Nullable SklearnMethod method;
    Map<String, Object> inferenceArgs = Map.of();
    /** A String (an output's name) or an Integer (its index), or null. */
    @Nullable Object output;
    Device device = Device.CPU;
    String dtype = "float32";
    @Nullable List<Integer> inputShape;
    @Nullable Integer minBatchSize;
    @Nullable Integer maxBatchSize;
    @Nullable Double maxWaitSecs;
    boolean largeModel;
    @Nullable Integer modelCopies;
    List<Op> preprocess = List.of();
    List<Op> postprocess = List.of();
    @Nullable String sha256;

    Fields copy() {
      try {
        return (Fields) clone();
      } catch (CloneNotSupportedException e) {
        throw new AssertionError(e);
      }
    }
  }

  private final Fields f;

  private Model(Fields fields, Io io) {
    super(io);
    this.f = fields;
  }

  private static Model create(String name, Framework framework, @Nullable String uri) {
    Fields f = new Fields();
    f.name = requireName(name, "Model." + factoryName(framework) + " name");
    f.framework = framework;
    if (uri != null && uri.isBlank()) {
      throw new IllegalArgumentException(
          "Model." + factoryName(framework) + " uri: must not be empty");
    }
    f.uri = uri;
    return new Model(f, Io.DEFAULT);
  }

  private static String factoryName(Framework framework) {
    switch (framework) {
      case PYTORCH:
        return "pytorch";
      case ONNX:
        return "onnx";
      case SKLEARN:
        return "sklearn";
      case TENSOR_RT:
        return "tensorRt";
      default:
        return "custom";
    }
  }

  private static String requireUri(String uri, String factory) {
    if (uri == null || uri.isBlank()) {
      throw new IllegalArgumentException(
          "Model." + factory + " uri: a local path or a Beam FileSystems URI of the model file"
              + " is required");
    }
    return uri;
  }

  /**
   * A PyTorch model: a TorchScript file by default; for a state dict use {@link
   * #withStateDict(String, Map)}.
   */
  public static Model pytorch(String name, String uri) {
    return create(name, Framework.PYTORCH, requireUri(uri, "pytorch"));
  }

  /** An ONNX model, run by ONNX Runtime. */
  public static Model onnx(String name, String uri) {
    return create(name, Framework.ONNX, requireUri(uri, "onnx"));
  }

  /**
   * A scikit-learn estimator, pickled by default; {@code withFormat(Format.SKOPS)} for a skops
   * file (data only, which a service loads without {@code --allow-code-format}), {@code
   * withFormat(Format.JOBLIB)} for joblib.
   */
  public static Model sklearn(String name, String uri) {
    return create(name, Framework.SKLEARN, requireUri(uri, "sklearn"));
  }

  /** A serialized TensorRT engine (needs a GPU worker with TensorRT). */
  public static Model tensorRt(String name, String uri) {
    return create(name, Framework.TENSOR_RT, requireUri(uri, "tensorRt"));
  }

  /**
   * A custom Beam {@code ModelHandler}, named by import path ({@code package.module:Name}); the
   * service only loads classes on its allow-list. {@code handlerParams} are passed to its
   * constructor.
   */
  public static Model custom(
      String name, @Nullable String uri, String handlerClass, Map<String, ?> handlerParams) {
    Model model = create(name, Framework.CUSTOM, uri);
    return model.withHandlerClass(handlerClass, handlerParams);
  }

  /** A custom model handler without a model file or parameters. */
  public static Model custom(String name, String handlerClass) {
    return custom(name, null, handlerClass, Map.of());
  }

  private Model with(java.util.function.Consumer<Fields> change) {
    Fields copy = f.copy();
    change.accept(copy);
    return new Model(copy, io);
  }

  @Override
  Model withIo(Io io) {
    return new Model(f, io);
  }

  // ------------------------------------------------------------------ settings

  /** The file format (the framework's default when not set). */
  public Model withFormat(Format format) {
    if (format == null) {
      throw new IllegalArgumentException("withFormat: format must not be null");
    }
    if (!f.framework.reads(format)) {
      throw new IllegalArgumentException(
          "withFormat: framework '" + f.framework.specName() + "' reads "
              + f.framework.formatList() + ", got '" + format.specName() + "'");
    }
    return with(c -> c.format = format);
  }

  /**
   * The {@code torch.nn.Module} class a state dict is loaded into (import path {@code
   * package.module:Name}, allow-listed by the service); pair with {@code
   * withFormat(Format.STATE_DICT)}, or use {@link #withStateDict(String, Map)}.
   */
  public Model withModelClass(String modelClass) {
    return withModelClass(modelClass, Map.of());
  }

  /** Like {@link #withModelClass(String)}, with keyword arguments for its constructor. */
  public Model withModelClass(String modelClass, Map<String, ?> params) {
    requireImportPath(modelClass, "withModelClass");
    Map<String, Object> copy = Json.copyParams(params, "withModelClass params");
    return with(
        c -> {
          c.modelClass = modelClass;
          c.modelParams = copy;
        });
  }

  /** A PyTorch state dict loaded into {@code modelClass(**params)}: format plus model class. */
  public Model withStateDict(String modelClass, Map<String, ?> params) {
    return withFormat(Format.STATE_DICT).withModelClass(modelClass, params);
  }

  /** The custom handler class (import path) and its constructor parameters. */
  public Model withHandlerClass(String handlerClass, Map<String, ?> params) {
    requireImportPath(handlerClass, "withHandlerClass");
    Map<String, Object> copy = Json.copyParams(params, "withHandlerClass params");
    return with(
        c -> {
          c.handlerClass = handlerClass;
          c.handlerParams = copy;
        });
  }

  /** The scikit-learn method to call ({@code predict} when not set). */
  public Model withMethod(SklearnMethod method) {
    if (method == null) {
      throw new IllegalArgumentException("withMethod: method must not be null");
    }
    return with(c -> c.method = method);
  }

  /**
   * Keyword arguments of this model's call, its own (each model of a spec gets its own): the
   * scikit-learn method's, the PyTorch {@code forward}'s, the custom handler's {@code
   * run_inference}'s. Values are JSON values (strings, numbers, booleans, null, lists, maps).
   * ONNX and TensorRT models take none. Arguments a model cannot take are refused when the
   * pipeline is built, where the framework can tell (a scikit-learn method's or a state dict
   * class's {@code forward} signature), otherwise each element fails with the model's message.
   *
   * <pre>{@code
   * Model.pytorch("mlp", "/models/mlp.pt")
   *     .withStateDict("mycompany.models:TemperatureMLP", Map.of("sizes", List.of(64, 64, 10)))
   *     .withInferenceArgs(Map.of("temperature", 4.0));
   * }</pre>
   */
  public Model withInferenceArgs(Map<String, ?> inferenceArgs) {
    Map<String, Object> copy = Json.copyParams(inferenceArgs, "withInferenceArgs");
    for (String key : copy.keySet()) {
      if (!KEYWORD.matcher(key).matches()) {
        throw new IllegalArgumentException(
            "withInferenceArgs: '" + key + "' is not a keyword argument name");
      }
    }
    if (!copy.isEmpty()
        && (f.framework == Framework.ONNX || f.framework == Framework.TENSOR_RT)) {
      throw new IllegalArgumentException(
          "withInferenceArgs: framework '" + f.framework.specName()
              + "' takes no inference args");
    }
    return with(c -> c.inferenceArgs = copy);
  }

  /**
   * The output to use when the model returns several: a key of the dict it returns, or the name
   * of an ONNX output. Without it a model's only output is used, and a model with several fails
   * each element with a message listing them and their shapes.
   */
  public Model withOutput(String output) {
    if (output == null || output.isBlank()) {
      throw new IllegalArgumentException("withOutput: the output's name must not be empty");
    }
    return with(c -> c.output = output);
  }

  /**
   * The output to use when the model returns several, by index: of the tuple or list it returns,
   * or of the ONNX model's outputs.
   */
  public Model withOutput(int index) {
    if (index < 0) {
      throw new IllegalArgumentException("withOutput: an output index must be 0 or more, got "
          + index);
    }
    return with(c -> c.output = index);
  }

  /** Where the model runs ({@link Device#CPU} when not set). */
  public Model withDevice(Device device) {
    if (device == null) {
      throw new IllegalArgumentException("withDevice: device must not be null");
    }
    return with(c -> c.device = device);
  }

  /** The numpy dtype the features are converted to before inference ({@code float32}). */
  public Model withDtype(String dtype) {
    if (dtype == null || !DTYPE.matcher(dtype).matches()) {
      throw new IllegalArgumentException(
          "withDtype: expected a numpy dtype name like 'float32', got "
              + (dtype == null ? "null" : "'" + dtype + "'"));
    }
    return with(c -> c.dtype = dtype);
  }

  /** The shape each element's features are reshaped to before inference. */
  public Model withInputShape(int... shape) {
    if (shape == null || shape.length == 0) {
      throw new IllegalArgumentException("withInputShape: needs at least one dimension");
    }
    List<Integer> dims = new ArrayList<>();
    for (int d : shape) {
      if (d <= 0) {
        throw new IllegalArgumentException(
            "withInputShape: dimensions must be positive, got " + Arrays.toString(shape));
      }
      dims.add(d);
    }
    List<Integer> copy = List.copyOf(dims);
    return with(c -> c.inputShape = copy);
  }

  /**
   * How RunInference batches elements for this model: batch sizes between {@code minBatchSize}
   * and {@code maxBatchSize}, and in streaming at most {@code maxWaitSecs} seconds of buffering.
   * Pass null for any to keep the default.
   */
  public Model withBatching(
      @Nullable Integer minBatchSize,
      @Nullable Integer maxBatchSize,
      @Nullable Double maxWaitSecs) {
    if (minBatchSize != null && minBatchSize < 1) {
      throw new IllegalArgumentException(
          "withBatching: minBatchSize must be at least 1, got " + minBatchSize);
    }
    if (maxBatchSize != null && maxBatchSize < 1) {
      throw new IllegalArgumentException(
          "withBatching: maxBatchSize must be at least 1, got " + maxBatchSize);
    }
    if (minBatchSize != null && maxBatchSize != null && minBatchSize > maxBatchSize) {
      throw new IllegalArgumentException(
          "withBatching: minBatchSize " + minBatchSize + " is larger than maxBatchSize "
              + maxBatchSize);
    }
    if (maxWaitSecs != null && !(maxWaitSecs > 0 && Double.isFinite(maxWaitSecs))) {
      throw new IllegalArgumentException(
          "withBatching: maxWaitSecs must be a positive number of seconds, got " + maxWaitSecs);
    }
    return with(
        c -> {
          c.minBatchSize = minBatchSize;
          c.maxBatchSize = maxBatchSize;
          c.maxWaitSecs = maxWaitSecs;
        });
  }

  /** Batch sizes between {@code minBatchSize} and {@code maxBatchSize}. */
  public Model withBatching(int minBatchSize, int maxBatchSize) {
    return withBatching(minBatchSize, maxBatchSize, f.maxWaitSecs);
  }

  /**
   * Load one copy of the model per machine, shared by every worker process (Beam's {@code
   * large_model}), for models too big for one copy per process.
   */
  public Model withLargeModel(boolean largeModel) {
    return with(c -> c.largeModel = largeModel);
  }

  /** Load exactly {@code copies} copies of the model per machine (Beam's {@code model_copies}). */
  public Model withModelCopies(int copies) {
    if (copies < 1) {
      throw new IllegalArgumentException("withModelCopies: must be at least 1, got " + copies);
    }
    return with(c -> c.modelCopies = copies);
  }

  /** Ops run on each element's features before inference, in order (replaces earlier ones). */
  public Model withPreprocess(Op... ops) {
    List<Op> copy = copyOps(ops, "withPreprocess");
    for (Op op : copy) {
      if (Op.POST_ONLY.contains(op.name())) {
        throw new IllegalArgumentException(
            "withPreprocess: op '" + op.name() + "' derives labels from model outputs and can"
                + " only be used in withPostprocess");
      }
    }
    return with(c -> c.preprocess = copy);
  }

  /** Ops run on the model output, in order (replaces earlier ones). */
  public Model withPostprocess(Op... ops) {
    List<Op> copy = copyOps(ops, "withPostprocess");
    return with(c -> c.postprocess = copy);
  }

  /**
   * Pin the model file's SHA-256 (64 lowercase hex digits): the workers refuse a file with
   * another checksum.
   */
  public Model withSha256(String sha256) {
    if (sha256 == null || !SHA256.matcher(sha256).matches()) {
      throw new IllegalArgumentException(
          "withSha256: expected 64 lowercase hex digits (the file's SHA-256), got "
              + (sha256 == null ? "null" : "'" + sha256 + "'"));
    }
    return with(c -> c.sha256 = sha256);
  }

  private static List<Op> copyOps(Op[] ops, String what) {
    if (ops == null) {
      throw new IllegalArgumentException(what + ": ops must not be null");
    }
    for (int i = 0; i < ops.length; i++) {
      if (ops[i] == null) {
        throw new IllegalArgumentException(what + ": op " + i + " is null");
      }
    }
    return List.of(ops);
  }

  private static void requireImportPath(String value, String what) {
    if (value == null || !IMPORT_PATH.matcher(value).matches()) {
      throw new IllegalArgumentException(
          what + ": " + (value == null ? "null" : "'" + value + "'")
              + " is not an import path like 'package.module:Name'");
    }
  }

  // ------------------------------------------------------------------ accessors

  @Override
  public String name() {
    return f.name;
  }

  @Override
  public String kind() {
    return "model";
  }

  /** The framework. */
  public Framework framework() {
    return f.framework;
  }

  /** The model URI, or null (custom handlers only). */
  public @Nullable String uri() {
    return f.uri;
  }

  /** The format as set, or the framework's default. */
  public Format format() {
    return f.format != null ? f.format : f.framework.defaultFormat();
  }

  /** The device. */
  public Device device() {
    return f.device;
  }

  /** The pre-processing ops. */
  public List<Op> preprocess() {
    return f.preprocess;
  }

  /** The post-processing ops. */
  public List<Op> postprocess() {
    return f.postprocess;
  }

  // ------------------------------------------------------------------ spec

  @Override
  List<Map.Entry<String, InferenceTransform<?>>> children() {
    return List.of();
  }

  @Override
  void checkNode(String path, Problems problems) {
    Format format = format();
    if (!f.framework.reads(format)) {
      problems.add(
          path + ".format",
          "expected one of " + f.framework.formatList() + " for framework '"
              + f.framework.specName() + "', got '" + format.specName() + "'");
    }
    boolean stateDict = f.framework == Framework.PYTORCH && format == Format.STATE_DICT;
    if (stateDict && f.modelClass == null) {
      problems.add(
          path + ".model_class",
          "is required: the import path of the torch.nn.Module class, 'package.module:Name'"
              + " (use withStateDict(modelClass, params))");
    } else if (!stateDict && f.modelClass != null) {
      problems.add(
          path + ".model_class",
          "is only used by framework 'pytorch' with format 'state_dict' (use"
              + " withStateDict(modelClass, params))");
    }
    if (f.framework == Framework.CUSTOM && f.handlerClass == null) {
      problems.add(
          path + ".handler_class",
          "is required: the import path of the ModelHandler class, 'package.module:Name'");
    } else if (f.framework != Framework.CUSTOM && f.handlerClass != null) {
      problems.add(path + ".handler_class", "is only used by framework 'custom'");
    }
    if (f.method != null && f.framework != Framework.SKLEARN) {
      problems.add(path + ".method", "is only used by framework 'sklearn'");
    }
    if (f.uri == null && f.framework != Framework.CUSTOM) {
      problems.add(
          path + ".uri",
          "is required: a local path or a Beam FileSystems URI of the model file");
    }
  }

  @Override
  ObjectNode nodeJson() {
    ObjectNode out = Json.object();
    out.put("kind", kind());
    out.put("name", f.name);
    out.put("framework", f.framework.specName());
    if (f.uri != null) {
      out.put("uri", f.uri);
    }
    if (f.format != null) {
      out.put("format", f.format.specName());
    }
    if (f.modelClass != null) {
      out.put("model_class", f.modelClass);
    }
    if (!f.modelParams.isEmpty()) {
      out.set("model_params", Json.toJson(f.modelParams));
    }
    if (f.handlerClass != null) {
      out.put("handler_class", f.handlerClass);
    }
    if (!f.handlerParams.isEmpty()) {
      out.set("handler_params", Json.toJson(f.handlerParams));
    }
    if (f.method != null) {
      out.put("method", f.method.specName());
    }
    if (!f.inferenceArgs.isEmpty()) {
      out.set("inference_args", Json.toJson(f.inferenceArgs));
    }
    if (f.output instanceof String) {
      out.put("output", (String) f.output);
    } else if (f.output != null) {
      out.put("output", (Integer) f.output);
    }
    if (f.device != Device.CPU) {
      out.put("device", f.device.specName());
    }
    if (!f.dtype.equals("float32")) {
      out.put("dtype", f.dtype);
    }
    if (f.inputShape != null) {
      ArrayNode shape = out.putArray("input_shape");
      f.inputShape.forEach(shape::add);
    }
    if (f.minBatchSize != null || f.maxBatchSize != null || f.maxWaitSecs != null) {
      ObjectNode batching = out.putObject("batching");
      if (f.minBatchSize != null) {
        batching.put("min_batch_size", f.minBatchSize);
      }
      if (f.maxBatchSize != null) {
        batching.put("max_batch_size", f.maxBatchSize);
      }
      if (f.maxWaitSecs != null) {
        batching.put("max_wait_secs", f.maxWaitSecs);
      }
    }
    if (f.largeModel || f.modelCopies != null) {
      ObjectNode memory = out.putObject("memory");
      if (f.largeModel) {
        memory.put("large_model", true);
      }
      if (f.modelCopies != null) {
        memory.put("model_copies", f.modelCopies);
      }
    }
    if (!f.preprocess.isEmpty()) {
      ArrayNode ops = out.putArray("preprocess");
      f.preprocess.forEach(op -> ops.add(op.toJson()));
    }
    if (!f.postprocess.isEmpty()) {
      ArrayNode ops = out.putArray("postprocess");
      f.postprocess.forEach(op -> ops.add(op.toJson()));
    }
    if (f.sha256 != null) {
      out.put("sha256", f.sha256);
    }
    return out;
  }
}
