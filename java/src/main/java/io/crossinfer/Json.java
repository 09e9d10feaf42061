package io.crossinfer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.lang.reflect.Array;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** JSON helpers for the canonical spec form. */
final class Json {
  static final JsonNodeFactory NODES = JsonNodeFactory.instance;
  private static final ObjectMapper PRETTY =
      new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
  private static final ObjectMapper COMPACT = new ObjectMapper();

  private Json() {}

  static ObjectNode object() {
    return NODES.objectNode();
  }

  static ArrayNode array() {
    return NODES.arrayNode();
  }

  /** A number the way Python writes it for a value given as a whole number: 90, not 90.0. */
  static JsonNode wholeIfIntegral(double value) {
    if (value == Math.rint(value) && Math.abs(value) < 9.007199254740992E15) {
      return NODES.numberNode((long) value);
    }
    return NODES.numberNode(value);
  }

  static String pretty(JsonNode node) {
    try {
      return PRETTY.writeValueAsString(node);
    } catch (JsonProcessingException e) {
      throw new IllegalStateException("cannot write JSON", e);
    }
  }

  static String compact(JsonNode node) {
    try {
      return COMPACT.writeValueAsString(node);
    } catch (JsonProcessingException e) {
      throw new IllegalStateException("cannot write JSON", e);
    }
  }

  static JsonNode parse(String text) {
    try {
      return COMPACT.readTree(text);
    } catch (JsonProcessingException e) {
      throw new IllegalArgumentException("not valid JSON: " + e.getOriginalMessage(), e);
    }
  }

  /**
   * An immutable, serializable, order-preserving copy of user parameters, checking that every
   * value can be written to JSON. {@code what} names the setting in error messages.
   */
  static Map<String, Object> copyParams(Map<String, ?> params, String what) {
    if (params == null) {
      throw new IllegalArgumentException(what + " must not be null; pass Map.of() for none");
    }
    LinkedHashMap<String, Object> copy = new LinkedHashMap<>();
    for (Map.Entry<String, ?> e : params.entrySet()) {
      if (e.getKey() == null) {
        throw new IllegalArgumentException(what + " has a null key");
      }
      String at = what + "." + e.getKey();
      copy.put(e.getKey(), copyValue(e.getValue(), at));
    }
    return Collections.unmodifiableMap(copy);
  }

  private static Object copyValue(Object value, String at) {
    if (value == null
        || value instanceof String
        || value instanceof Boolean
        || value instanceof Integer
        || value instanceof Long
        || value instanceof Short
        || value instanceof Byte) {
      return value;
    }
    if (value instanceof Double || value instanceof Float) {
      double d = ((Number) value).doubleValue();
      if (!Double.isFinite(d)) {
        throw new IllegalArgumentException(at + " must be a finite number, got " + value);
      }
      return value;
    }
    if (value instanceof Map) {
      Map<String, Object> nested = new LinkedHashMap<>();
      for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
        if (!(e.getKey() instanceof String)) {
          throw new IllegalArgumentException(at + " has a non-string key " + e.getKey());
        }
        nested.put((String) e.getKey(), copyValue(e.getValue(), at + "." + e.getKey()));
      }
      return Collections.unmodifiableMap(nested);
    }
    if (value instanceof Collection) {
      List<Object> items = new java.util.ArrayList<>();
      int i = 0;
      for (Object item : (Collection<?>) value) {
        items.add(copyValue(item, at + "[" + i++ + "]"));
      }
      return Collections.unmodifiableList(items);
    }
    if (value.getClass().isArray()) {
      List<Object> items = new java.util.ArrayList<>();
      for (int i = 0; i < Array.getLength(value); i++) {
        items.add(copyValue(Array.get(value, i), at + "[" + i + "]"));
      }
      return Collections.unmodifiableList(items);
    }
    throw new IllegalArgumentException(
        at
            + " must be a string, number, boolean, null, list or map (it is written to the spec"
            + " JSON), got a "
            + value.getClass().getName());
  }

  /** A value made by {@link #copyParams} as JSON. */
  static JsonNode toJson(Object value) {
    if (value == null) {
      return NODES.nullNode();
    }
    if (value instanceof String) {
      return NODES.textNode((String) value);
    }
    if (value instanceof Boolean) {
      return NODES.booleanNode((Boolean) value);
    }
    if (value instanceof Double || value instanceof Float) {
      return NODES.numberNode(((Number) value).doubleValue());
    }
    if (value instanceof Number) {
      return NODES.numberNode(((Number) value).longValue());
    }
    if (value instanceof Map) {
      ObjectNode out = object();
      for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
        out.set((String) e.getKey(), toJson(e.getValue()));
      }
      return out;
    }
    if (value instanceof List) {
      ArrayNode out = array();
      for (Object item : (List<?>) value) {
        out.add(toJson(item));
      }
      return out;
    }
    throw new IllegalStateException("not a JSON value: " + value.getClass());
  }
}
