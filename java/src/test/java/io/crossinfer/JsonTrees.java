package io.crossinfer;

import static org.junit.Assert.fail;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;

/** Tree equality for JSON: key order matters, numbers compare by value. */
final class JsonTrees {
  private JsonTrees() {}

  static void assertSameTree(String what, JsonNode expected, JsonNode actual) {
    List<String> diffs = new ArrayList<>();
    compare("$", expected, actual, diffs);
    if (!diffs.isEmpty()) {
      fail(what + " differs from the golden file:\n  " + String.join("\n  ", diffs));
    }
  }

  private static void compare(String path, JsonNode e, JsonNode a, List<String> diffs) {
    if (e.isNumber() && a.isNumber()) {
      if (e.decimalValue().compareTo(a.decimalValue()) != 0) {
        diffs.add(path + ": expected " + e + ", got " + a);
      }
      return;
    }
    if (e.getNodeType() != a.getNodeType()) {
      diffs.add(path + ": expected " + e + ", got " + a);
      return;
    }
    if (e.isObject()) {
      List<String> ek = new ArrayList<>();
      e.fieldNames().forEachRemaining(ek::add);
      List<String> ak = new ArrayList<>();
      a.fieldNames().forEachRemaining(ak::add);
      if (!ek.equals(ak)) {
        diffs.add(path + ": expected fields " + ek + " (in this order), got " + ak);
      }
      for (String k : ek) {
        if (a.has(k)) {
          compare(path + "." + k, e.get(k), a.get(k), diffs);
        }
      }
    } else if (e.isArray()) {
      if (e.size() != a.size()) {
        diffs.add(path + ": expected " + e.size() + " items, got " + a.size());
        return;
      }
      Iterator<JsonNode> ei = e.elements();
      Iterator<JsonNode> ai = a.elements();
      for (int i = 0; ei.hasNext(); i++) {
        compare(path + "[" + i + "]", ei.next(), ai.next(), diffs);
      }
    } else if (!e.equals(a)) {
      diffs.add(path + ": expected " + e + ", got " + a);
    }
  }
}
