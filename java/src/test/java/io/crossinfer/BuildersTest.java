package io.crossinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertNotSame;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.List;
import java.util.Map;
import org.apache.beam.model.pipeline.v1.ExternalTransforms.ExternalConfigurationPayload;
import org.apache.beam.sdk.coders.RowCoder;
import org.apache.beam.sdk.schemas.Schema;
import org.apache.beam.sdk.schemas.SchemaTranslation;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.util.SerializableUtils;
import org.apache.beam.sdk.values.Row;
import org.junit.Test;

/** The builders are immutable values that write canonical JSON. */
public class BuildersTest {
  private static final ObjectMapper MAPPER = new ObjectMapper();

  private static JsonNode node(Node n) throws Exception {
    return MAPPER.readTree(n.toSpecJson()).get("node");
  }

  @Test
  public void withMethodsReturnNewInstancesAndLeaveTheOriginalUnchanged() throws Exception {
    Model base = Model.sklearn("lr", "/m/lr.pkl");
    String before = base.toSpecJson();
    Model gpu = base.withDevice(Device.GPU);
    assertNotSame(base, gpu);
    assertEquals(before, base.toSpecJson());
    assertEquals("gpu", node(gpu).get("device").asText());
    ABTest ab = ABTest.of("ab", ABTest.Arm.of("a", base), ABTest.Arm.of("b", gpu));
    ABTest hashed = ab.withHashSplit("salt");
    assertEquals("random", ab.split().specName());
    assertEquals(ABTest.Split.HASH, hashed.split());
  }

  @Test
  public void defaultsAreLeftOutOfTheJson() throws Exception {
    JsonNode n = node(Model.sklearn("lr", "/m/lr.pkl"));
    assertEquals(List.of("kind", "name", "framework", "uri"), fieldNames(n));
    JsonNode ab =
        node(ABTest.of("ab", ABTest.Arm.of("a", Model.sklearn("x", "x.pkl")),
            ABTest.Arm.of("b", Model.sklearn("y", "y.pkl"))));
    assertEquals(List.of("kind", "name", "arms"), fieldNames(ab));
    assertEquals(1, ab.get("arms").get(0).get("weight").asInt());
  }

  @Test
  public void switchingTheSplitDropsTheOtherSplitsSettings() throws Exception {
    ABTest ab =
        ABTest.of("ab", ABTest.Arm.of("a", Model.sklearn("x", "x.pkl")),
                ABTest.Arm.of("b", Model.sklearn("y", "y.pkl")))
            .withRandomSplit(7)
            .withMirror();
    JsonNode n = node(ab);
    assertEquals("mirror", n.get("split").asText());
    assertEquals(null, n.get("seed"));
  }

  @Test
  public void weightsAreWrittenAsWholeNumbersWhenWhole() throws Exception {
    ABTest ab =
        ABTest.of("ab", ABTest.Arm.of("a", Model.sklearn("x", "x.pkl")),
                ABTest.Arm.of("b", Model.sklearn("y", "y.pkl")))
            .withWeights(90, 12.5);
    String json = ab.toCompactSpecJson();
    assertEquals(true, json.contains("\"weight\":90,"));
    assertEquals(true, json.contains("\"weight\":12.5,"));
  }

  @Test
  public void abTestOfModelsNamesArmsAfterTheModels() throws Exception {
    Model a = Model.sklearn("digits_lr", "lr.pkl");
    Model b = Model.pytorch("digits_mlp", "mlp.ts");
    ABTest ab = ABTest.of(a, b).split(90, 10);
    JsonNode n = node(ab);
    assertEquals("digits_lr_vs_digits_mlp", n.get("name").asText());
    assertEquals("digits_lr", n.get("arms").get(0).get("name").asText());
    assertEquals(90, n.get("arms").get(0).get("weight").asInt());
    assertEquals("digits_mlp", n.get("arms").get(1).get("name").asText());
    assertEquals(10, n.get("arms").get(1).get("weight").asInt());
    assertEquals("exp", node(ab.withName("exp")).get("name").asText());
    assertEquals(
        Keyed.of("k", Keyed.Route.of(a, "x")).toSpecJson(),
        Keyed.of("k", Keyed.route(a, "x")).toSpecJson());
  }

  @Test
  public void defaultStepNameNamesTheNode() {
    assertEquals("Model(digits_lr)", Model.sklearn("digits_lr", "lr.pkl").getName());
    assertEquals("Sequence(seq)", Sequence.of("seq", Model.sklearn("a", "a")).getName());
  }

  @Test
  public void urnFollowsTheRootKind() {
    Model m = Model.sklearn("x", "x.pkl");
    assertEquals("beam:transform:crossinfer:model:v1", m.urn());
    assertEquals("beam:transform:crossinfer:sequence:v1", Sequence.of("s", m).urn());
    assertEquals("beam:transform:crossinfer:keyed:v1",
        Keyed.of("k", Keyed.Route.of(m, "a")).urn());
    assertEquals("beam:transform:crossinfer:ab_test:v1",
        ABTest.of("ab", ABTest.Arm.of("a", m), ABTest.Arm.of("b", Model.sklearn("y", "y"))).urn());
  }

  @Test
  public void transformsSurviveJavaSerialization() {
    Model m =
        Model.pytorch("mlp", "/m/mlp.pt")
            .withStateDict("crossinfer.models:MLP", Map.of("sizes", List.of(64, 10)))
            .withPostprocess(Op.softmax(), Op.topK(2))
            .withExpansionService("localhost:1234");
    Model copy = SerializableUtils.clone(m);
    assertEquals(m, copy);
    assertEquals(m.toSpecJson(), copy.toSpecJson());
    assertEquals("localhost:1234", copy.expansionService());
  }

  @Test
  public void equalityFollowsTheSpec() {
    assertEquals(Model.sklearn("x", "x.pkl"), Model.sklearn("x", "x.pkl"));
    assertNotEquals(Model.sklearn("x", "x.pkl"), Model.sklearn("x", "y.pkl"));
    assertNotEquals(
        Model.sklearn("x", "x.pkl"), Model.sklearn("x", "x.pkl").withFeaturesField("pixels"));
  }

  @Test
  public void opsAreFlatObjects() {
    assertEquals("{\"op\":\"pad_truncate\",\"length\":64,\"value\":0.0}",
        Op.padTruncate(64, 0).toString());
    assertEquals("{\"op\":\"normalize\",\"mean\":[0.5,0.25],\"std\":[2.0,4.0]}",
        Op.normalize(new double[] {0.5, 0.25}, new double[] {2, 4}).toString());
    assertEquals("{\"op\":\"threshold\",\"threshold\":0.5}", Op.threshold(0.5).toString());
    assertEquals("{\"op\":\"reshape\",\"shape\":[-1,8]}", Op.reshape(-1, 8).toString());
    assertEquals("{\"op\":\"scale\",\"factor\":[1.0,2.0]}",
        Op.scale(new double[] {1, 2}).toString());
    assertEquals("{\"op\":\"future_op\",\"alpha\":1}",
        Op.named("future_op", Map.of("alpha", 1)).toString());
  }

  @Test
  public void floatsAreWrittenAsPythonWritesThem() {
    assertEquals("0.0625", Json.pythonFloat(0.0625));
    assertEquals("90.0", Json.pythonFloat(90));
    assertEquals("0.0001", Json.pythonFloat(1e-4));
    assertEquals("1e-05", Json.pythonFloat(1e-5));
    assertEquals("1.5e+16", Json.pythonFloat(1.5e16));
    assertEquals("1234567890123456.0", Json.pythonFloat(1234567890123456.0));
    assertEquals("-2.5", Json.pythonFloat(-2.5));
    assertEquals("0.1", Json.pythonFloat(0.1));
  }

  @Test
  public void textIsEscapedAsPythonEscapesIt() {
    String json = Model.sklearn("m", "/models/caf\u00e9 \"x\"\\y.pkl").toSpecJson();
    assertEquals(true, json.contains("\"uri\": \"/models/caf\\u00e9 \\\"x\\\"\\\\y.pkl\""));
  }

  @Test
  public void keyedShardsReachThePayloadOnlyWhenSet() throws Exception {
    Keyed keyed = Keyed.of("k", Keyed.route(Model.sklearn("lr", "/m/lr.skops"), "a"));
    // The default is the service's (16, or 1 under a small maxModelsPerWorker): not written, so
    // specs without the setting stay byte for byte what they were.
    assertEquals(List.of("kind", "name", "routes"), fieldNames(node(keyed)));
    Keyed sharded = keyed.withMaxModelsPerWorker(2).withShards(4);
    assertEquals(List.of("kind", "name", "routes", "max_models_per_worker", "shards"),
        fieldNames(node(sharded)));
    assertEquals(List.of("kind", "name", "routes"), fieldNames(node(keyed)));
    assertEquals(4, node(sharded.withRoute(Model.sklearn("b", "/m/b.skops"), "b"))
        .get("shards").asInt());
    // What the expansion service receives: the spec in the payload row's spec field.
    byte[] bytes = ExpansionPayload.encode(sharded.toCompactSpecJson(), null, "team");
    ExternalConfigurationPayload payload = ExternalConfigurationPayload.parseFrom(bytes);
    Schema schema = SchemaTranslation.schemaFromProto(payload.getSchema());
    Row row =
        CoderUtils.decodeFromByteArray(RowCoder.of(schema), payload.getPayload().toByteArray());
    JsonNode sent = MAPPER.readTree(row.getString("spec")).get("node");
    assertEquals(4, sent.get("shards").asInt());
    assertEquals(2, sent.get("max_models_per_worker").asInt());
  }

  private static List<String> fieldNames(JsonNode n) {
    List<String> names = new java.util.ArrayList<>();
    n.fieldNames().forEachRemaining(names::add);
    return names;
  }
}
