package io.crossinfer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
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

  /**
   * {@code node} as Python's {@code json.dumps(value, indent=2)} writes it (the form of {@code
   * crossinfer.spec.spec_to_json} and of the golden files): two-space indents, {@code ": "}
   * after keys, one array item per line, non-ASCII escaped, floats as Python's {@code repr}.
   */
  static String pretty(JsonNode node) {
    StringBuilder out = new StringBuilder();
    writePython(node, 0, out);
    return out.toString();
  }

  private static void writePython(JsonNode node, int indent, StringBuilder out) {
    if (node.isObject()) {
      if (node.size() == 0) {
        out.append("{}");
        return;
      }
      out.append("{\n");
      var fields = node.fields();
      while (fields.hasNext()) {
        var field = fields.next();
        out.append(" ".repeat(indent + 2));
        writeString(field.getKey(), out);
        out.append(": ");
        writePython(field.getValue(), indent + 2, out);
        out.append(fields.hasNext() ? ",\n" : "\n");
      }
      out.append(" ".repeat(indent)).append('}');
    } else if (node.isArray()) {
      if (node.size() == 0) {
        out.append("[]");
        return;
      }
      out.append("[\n");
      for (int i = 0; i < node.size(); i++) {
        out.append(" ".repeat(indent + 2));
        writePython(node.get(i), indent + 2, out);
        out.append(i + 1 < node.size() ? ",\n" : "\n");
      }
      out.append(" ".repeat(indent)).append(']');
    } else if (node.isTextual()) {
      writeString(node.textValue(), out);
    } else if (node.isFloatingPointNumber()) {
      out.append(pythonFloat(node.doubleValue()));
    } else if (node.isNumber()) {
      out.append(node.bigIntegerValue());
    } else if (node.isBoolean()) {
      out.append(node.booleanValue() ? "true" : "false");
    } else {
      out.append("null");
    }
  }

  private static void writeString(String text, StringBuilder out) {
    out.append('"');
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      switch (c) {
        case '"':
          out.append("\\\"");
          break;
        case '\\':
          out.append("\\\\");
          break;
        case '\n':
          out.append("\\n");
          break;
        case '\r':
          out.append("\\r");
          break;
        case '\t':
          out.append("\\t");
          break;
        case '\b':
          out.append("\\b");
          break;
        case '\f':
          out.append("\\f");
          break;
        default:
          if (c < 0x20 || c > 0x7f) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
      }
    }
    out.append('"');
  }

  /** A double as Python's {@code repr(float)}: {@code 0.0625}, {@code 90.0}, {@code 1e-05}. */
  static String pythonFloat(double value) {
    if (value == 0) {
      return (1 / value < 0) ? "-0.0" : "0.0";
    }
    java.math.BigDecimal exact = new java.math.BigDecimal(Double.toString(value)).stripTrailingZeros();
    int exponent = exact.precision() - exact.scale() - 1; // position of the first digit
    if (exponent >= -4 && exponent < 16) {
      String plain = exact.toPlainString();
      return plain.contains(".") ? plain : plain + ".0";
    }
    String digits = exact.unscaledValue().abs().toString();
    String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
    return (value < 0 ? "-" : "") + mantissa + "e" + (exponent < 0 ? "-" : "+")
        + String.format("%02d", Math.abs(exponent));
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
