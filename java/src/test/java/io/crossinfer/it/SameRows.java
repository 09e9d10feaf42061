package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Element-for-element comparison of two runs of the same spec over the same rows (e.g. a Java
 * pipeline on Flink against crossinfer's Python transform run directly): the same result rows,
 * keyed by input id and path, with the same model and label and scores within {@link
 * #SCORE_TOLERANCE}; the same failures, keyed by input id and node, with the same message.
 */
final class SameRows {
  /** float32's unit roundoff, 2^-24: the models compute in float32. */
  static final double FLOAT32_UNIT_ROUNDOFF = Math.scalb(1.0, -24);

  /**
   * How far a score (a probability in [0, 1]) of one row may move between two runs: 168 units
   * of float32 roundoff (1e-5). Runs batch rows differently (a different split over workers, a
   * different bundle), so the models' float32 sums - dot products at most 64 terms long, two or
   * three layers deep - add up in another order; each reordered sum moves by a few units of
   * roundoff of its magnitude, and softmax and predict_proba shrink absolute errors (a
   * probability's derivative is at most 1/4 in each logit). A wrong row, model or label moves a
   * score by orders of magnitude more.
   */
  static final double SCORE_TOLERANCE = 168 * FLOAT32_UNIT_ROUNDOFF;

  private SameRows() {}

  /** {@code actual} (rows of the Java outputs or of a Python run) equal {@code expected}. */
  static void assertSameResults(
      String what, Iterable<? extends JsonNode> expected, Iterable<? extends JsonNode> actual) {
    Map<String, JsonNode> want = byKey(what + " (expected)", expected, "path");
    Map<String, JsonNode> got = byKey(what, actual, "path");
    assertSameKeys(what + " results", want, got);
    for (Map.Entry<String, JsonNode> e : want.entrySet()) {
      JsonNode w = e.getValue();
      JsonNode g = got.get(e.getKey());
      String where = what + ": result " + e.getKey();
      assertEquals(where + " model", w.get("model").asText(), g.get("model").asText());
      assertEquals(where + " label", w.get("label"), g.get("label"));
      if (w.get("score").isNull() || g.get("score").isNull()) {
        assertEquals(where + " score", w.get("score"), g.get("score"));
      } else {
        double ws = w.get("score").asDouble();
        double gs = g.get("score").asDouble();
        assertTrue(
            where + " score " + gs + ", expected " + ws + " +- " + SCORE_TOLERANCE,
            Math.abs(ws - gs) <= SCORE_TOLERANCE);
      }
    }
  }

  /**
   * {@code actual} failures (Java failure rows, whose input row is {@code element}, or Python
   * ones with its {@code id}) equal {@code expected}: same input ids, nodes and messages.
   */
  static void assertSameFailures(
      String what, Iterable<? extends JsonNode> expected, Iterable<? extends JsonNode> actual) {
    Map<String, JsonNode> want = byKey(what + " (expected)", expected, "node");
    Map<String, JsonNode> got = byKey(what, actual, "node");
    assertSameKeys(what + " failures", want, got);
    for (Map.Entry<String, JsonNode> e : want.entrySet()) {
      assertEquals(what + ": failure " + e.getKey(), e.getValue().get("error").asText(),
          got.get(e.getKey()).get("error").asText());
    }
  }

  /** Rows by {@code "<id> <field>"}; a row twice fails. */
  private static Map<String, JsonNode> byKey(
      String what, Iterable<? extends JsonNode> rows, String field) {
    Map<String, JsonNode> out = new TreeMap<>();
    for (JsonNode r : rows) {
      long id = (r.has("element") ? r.get("element") : r).get("id").asLong();
      String key = String.format("%05d %s", id, r.get(field).asText());
      assertTrue(what + ": " + key + " twice", out.put(key, r) == null);
    }
    return out;
  }

  private static void assertSameKeys(
      String what, Map<String, JsonNode> expected, Map<String, JsonNode> actual) {
    if (expected.keySet().equals(actual.keySet())) {
      return;
    }
    List<String> missing = new ArrayList<>(expected.keySet());
    missing.removeAll(actual.keySet());
    List<String> extra = new ArrayList<>(actual.keySet());
    extra.removeAll(expected.keySet());
    fail(what + ": expected " + expected.size() + ", got " + actual.size()
        + "; missing (first 5): " + missing.subList(0, Math.min(5, missing.size()))
        + "; unexpected (first 5): " + extra.subList(0, Math.min(5, extra.size())));
  }
}
