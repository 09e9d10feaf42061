package io.crossinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Bad settings fail early, and every message names the setting or its field path. */
public class SpecValidationTest {
  private static Model lr(String name) {
    return Model.sklearn(name, "/models/lr.pkl");
  }

  private static void assertMessage(Throwable e, String expected) {
    assertTrue(
        "expected the message to contain <" + expected + ">, got <" + e.getMessage() + ">",
        e.getMessage().contains(expected));
  }

  // ------------------------------------------------------------ checked when given

  @Test
  public void invalidNodeNameIsRefusedNamingTheFactory() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Model.sklearn("has space", "x.pkl")),
        "Model.sklearn name: 'has space' is not a valid name");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> ABTest.of("", lrArm("a"), lrArm("b"))),
        "ABTest.of name");
  }

  @Test
  public void missingUriIsRefused() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Model.pytorch("m", " ")),
        "Model.pytorch uri");
  }

  @Test
  public void formatOfAnotherFrameworkIsRefused() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withFormat(Format.ONNX)),
        "withFormat: framework 'sklearn' reads 'pickle', 'joblib', 'skops', got 'onnx'");
  }

  @Test
  public void badBatchingIsRefused() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withBatching(64, 8)),
        "withBatching: minBatchSize 64 is larger than maxBatchSize 8");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withBatching(0, 8)),
        "minBatchSize must be at least 1, got 0");
    assertMessage(
        assertThrows(
            IllegalArgumentException.class, () -> lr("m").withBatching(null, null, -1.0)),
        "maxWaitSecs must be a positive number of seconds, got -1.0");
  }

  @Test
  public void badMemorySettingsAreRefused() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withModelCopies(0)),
        "withModelCopies: must be at least 1, got 0");
  }

  @Test
  public void badShapeDtypeAndChecksumAreRefused() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withInputShape(8, 0)),
        "withInputShape: dimensions must be positive, got [8, 0]");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withDtype("float 32")),
        "withDtype: expected a numpy dtype name");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withSha256("ABC")),
        "withSha256: expected 64 lowercase hex digits");
  }

  @Test
  public void classNamesMustBeImportPaths() {
    assertMessage(
        assertThrows(
            IllegalArgumentException.class,
            () -> Model.pytorch("m", "m.pt").withStateDict("not a path", Map.of())),
        "withModelClass: 'not a path' is not an import path like 'package.module:Name'");
    assertMessage(
        assertThrows(
            IllegalArgumentException.class, () -> Model.custom("c", "mycompany.handlers.X")),
        "withHandlerClass");
  }

  @Test
  public void paramsMustBeJsonValues() {
    assertMessage(
        assertThrows(
            IllegalArgumentException.class,
            () -> Model.pytorch("m", "m.pt").withStateDict("a.b:C", Map.of("x", new Object()))),
        "withModelClass params.x must be a string, number, boolean, null, list or map");
    assertMessage(
        assertThrows(
            IllegalArgumentException.class,
            () -> Model.pytorch("m", "m.pt").withStateDict("a.b:C", Map.of("x", Double.NaN))),
        "withModelClass params.x must be a finite number");
  }

  @Test
  public void labelOpsAreRefusedInPreprocessing() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withPreprocess(Op.argmax())),
        "withPreprocess: op 'argmax' derives labels from model outputs");
  }

  @Test
  public void badOpParametersAreRefusedNamingTheParameter() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Op.scale(Double.NaN)),
        "Op.scale: 'factor' must be a finite number, got NaN");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Op.normalize(1, 0)),
        "Op.normalize: 'std' must not be zero");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Op.padTruncate(0)),
        "Op.padTruncate: 'length' must be a positive integer, got 0");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Op.topK(-2)),
        "Op.topK: 'k' must be a positive integer, got -2");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Op.reshape(-1, 8, -1)),
        "Op.reshape: only one dimension can be -1");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Op.cast(" ")),
        "Op.cast: 'dtype' must not be empty");
  }

  @Test
  public void badWeightsAreRefused() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> ABTest.Arm.of("a", -1, lr("m"))),
        "ABTest.Arm 'a' weight: must be a positive number, got -1.0");
    ABTest ab = ABTest.of("ab", lrArm("a"), lrArm("b"));
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> ab.withWeights(90, 5, 5)),
        "withWeights: expected one weight per arm (2), got 3");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> ab.withWeights(1, 0)),
        "withWeights: weight 1: must be a positive number, got 0.0");
  }

  @Test
  public void routesNeedKeysAndABoundOfAtLeastOne() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> Keyed.Route.of(lr("m"))),
        "the route to 'm' needs at least one key");
    assertMessage(
        assertThrows(
            IllegalArgumentException.class,
            () -> Keyed.of("k", Keyed.Route.of(lr("m"), "a")).withMaxModelsPerWorker(0)),
        "withMaxModelsPerWorker: must be at least 1, got 0");
    Keyed keyed = Keyed.of("k", Keyed.Route.of(lr("m"), "a"));
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> keyed.withShards(0)),
        "withShards: must be from 1 to 1024, got 0");
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> keyed.withShards(1025)),
        "withShards: must be from 1 to 1024, got 1025");
  }

  @Test
  public void badExpansionServiceAddressIsRefused() {
    assertMessage(
        assertThrows(IllegalArgumentException.class, () -> lr("m").withExpansionService("")),
        "withExpansionService: address must be host:port");
    assertMessage(
        assertThrows(
            IllegalArgumentException.class, () -> lr("m").withExpansionService("localhost")),
        "withExpansionService: address must be host:port, got 'localhost'");
  }

  // ------------------------------------------------------------ checked on the whole spec

  private static ABTest.Arm lrArm(String name) {
    return ABTest.Arm.of(name, lr("lr_" + name));
  }

  private static SpecException specError(Node node) {
    return assertThrows(SpecException.class, node::toSpecJson);
  }

  @Test
  public void stateDictNeedsAModelClass() {
    SpecException e = specError(Model.pytorch("m", "m.pt").withFormat(Format.STATE_DICT));
    assertEquals(
        List.of(
            "node.model_class: is required: the import path of the torch.nn.Module class,"
                + " 'package.module:Name' (use withStateDict(modelClass, params))"),
        e.problems());
  }

  @Test
  public void modelClassWithoutStateDictIsRefused() {
    assertMessage(
        specError(Model.pytorch("m", "m.ts").withModelClass("a.b:C")),
        "node.model_class: is only used by framework 'pytorch' with format 'state_dict'");
  }

  @Test
  public void methodIsOnlyForScikitLearn() {
    assertMessage(
        specError(Model.onnx("m", "m.onnx").withMethod(SklearnMethod.PREDICT)),
        "node.method: is only used by framework 'sklearn'");
  }

  @Test
  public void handlerClassIsOnlyForCustom() {
    assertMessage(
        specError(lr("m").withHandlerClass("a.b:Handler", Map.of())),
        "node.handler_class: is only used by framework 'custom'");
  }

  @Test
  public void abTestNeedsTwoDistinctArms() {
    assertMessage(specError(ABTest.of("ab", lrArm("a"))),
        "node.arms: an A/B test needs at least two arms, got 1");
    assertMessage(
        specError(ABTest.of("ab", ABTest.Arm.of("a", lr("x")), ABTest.Arm.of("a", lr("y")))),
        "node.arms[1].name: arm name 'a' is used twice");
  }

  @Test
  public void nodeNamesAreUniqueAcrossTheTree() {
    ABTest ab =
        ABTest.of(
            "ab",
            ABTest.Arm.of("a", lr("same")),
            ABTest.Arm.of("b", Sequence.of("seq", lr("same"))));
    assertMessage(
        specError(ab),
        "node.arms[1].node.stages[0].name: name 'same' is already used at"
            + " node.arms[0].node.name");
  }

  @Test
  public void keysAreRoutedOnce() {
    Keyed keyed =
        Keyed.of("k", Keyed.Route.of(lr("a"), "x", "y")).withRoute(lr("b"), "y");
    assertMessage(specError(keyed), "node.routes[1].keys: key 'y' is already routed by routes[0]");
    assertMessage(specError(Keyed.of("empty")), "node.routes: needs at least one route");
  }

  @Test
  public void sequenceNeedsAStage() {
    assertMessage(specError(Sequence.of("s")), "node.stages: needs at least one stage");
  }

  @Test
  public void ioSettingsBelongOnTheRoot() {
    ABTest ab =
        ABTest.of("ab", ABTest.Arm.of("a", lr("x").withFeaturesField("pixels")), lrArm("b"));
    assertMessage(
        specError(ab),
        "node.arms[0].node: withFeaturesField/withKeyField/withExpansionService/withTransport/"
            + "withTiming are set on a nested node");
  }

  @Test
  public void everyProblemIsReportedAtOnce() {
    ABTest ab =
        ABTest.of(
            "ab",
            ABTest.Arm.of("a", Model.pytorch("x", "x.pt").withFormat(Format.STATE_DICT)),
            ABTest.Arm.of("a", Sequence.of("s")));
    SpecException e = specError(ab);
    assertEquals(e.problems().toString(), 3, e.problems().size());
    assertMessage(e, "invalid crossinfer spec (3 problems):");
  }
}
