package io.crossinfer.it;

import static org.junit.Assert.assertEquals;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.crossinfer.Node;
import java.util.Map;
import org.junit.Test;

/**
 * The specs the Java tests and demo build equal the ones Python's {@code crossinfer.demo} writes
 * for the same model files (as JSON trees; the demo's files are not in canonical field order).
 */
public class DemoSpecsIT {
  private static final ObjectMapper MAPPER = new ObjectMapper();

  @Test
  public void javaBuiltDemoSpecsEqualThePythonDemoSpecs() throws Exception {
    Map<String, Node> specs =
        Map.of(
            "ab.json", E2e.abTest(),
            "sequence.json", E2e.sequence(),
            "keyed.json", E2e.keyed(),
            "ab.json (demo)", io.crossinfer.examples.DigitsDemo.abTest(E2e.models()),
            "sequence.json (demo)", io.crossinfer.examples.DigitsDemo.sequence(E2e.models()));
    for (Map.Entry<String, Node> e : specs.entrySet()) {
      String file = e.getKey().split(" ")[0];
      assertEquals(
          e.getKey(),
          MAPPER.readTree(E2e.models().resolve(file).toFile()),
          MAPPER.readTree(e.getValue().toSpecJson()));
    }
  }
}
