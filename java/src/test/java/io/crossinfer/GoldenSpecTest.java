package io.crossinfer;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.Test;

/**
 * The Java builders write exactly the golden spec files in {@code tests/golden}, which the Python
 * suite checks against the Python dataclasses: the two languages cannot drift.
 */
public class GoldenSpecTest {
  private static final ObjectMapper MAPPER = new ObjectMapper();

  static Path goldenDir() {
    Path dir = Paths.get("..", "tests", "golden").toAbsolutePath().normalize();
    assertTrue("golden spec directory " + dir + " is missing", Files.isDirectory(dir));
    return dir;
  }

  @Test
  public void everyGoldenFileHasAJavaBuiltSpec() throws IOException {
    Set<String> files;
    try (Stream<Path> paths = Files.list(goldenDir())) {
      files =
          paths
              .map(p -> p.getFileName().toString())
              .filter(n -> n.endsWith(".json"))
              .collect(Collectors.toCollection(TreeSet::new));
    }
    assertEquals(
        "a golden file was added or removed: add its spec to GoldenSpecs.all()",
        files,
        new TreeSet<>(GoldenSpecs.all().keySet()));
  }

  @Test
  public void javaBuildersWriteTheGoldenTrees() throws IOException {
    for (Map.Entry<String, Node> entry : GoldenSpecs.all().entrySet()) {
      JsonNode golden = MAPPER.readTree(goldenDir().resolve(entry.getKey()).toFile());
      JsonNode built = MAPPER.readTree(entry.getValue().toSpecJson());
      JsonTrees.assertSameTree(entry.getKey(), golden, built);
    }
  }

  @Test
  public void javaBuildersWriteTheGoldenFilesByteForByte() throws IOException {
    // Beyond tree equality: integers stay integers (weight 90, not 90.0), floats stay floats
    // (value 0.0), and the layout is Python's json.dumps(indent=2): the same file either way.
    for (Map.Entry<String, Node> entry : GoldenSpecs.all().entrySet()) {
      assertEquals(
          entry.getKey(),
          Files.readString(goldenDir().resolve(entry.getKey())),
          entry.getValue().toSpecJson() + "\n");
    }
  }

  @Test
  public void compactSpecSentToTheServiceIsTheSameTree() throws IOException {
    for (Map.Entry<String, Node> entry : GoldenSpecs.all().entrySet()) {
      JsonNode golden = MAPPER.readTree(goldenDir().resolve(entry.getKey()).toFile());
      assertEquals(
          entry.getKey(),
          MAPPER.writeValueAsString(golden),
          ((InferenceTransform<?>) entry.getValue()).toCompactSpecJson());
    }
  }

  @Test
  public void goldenSpecsRoundTripThroughTheGenericJsonTransform() throws IOException {
    for (Map.Entry<String, Node> entry : GoldenSpecs.all().entrySet()) {
      String text = Files.readString(goldenDir().resolve(entry.getKey()));
      Inference inference = Inference.ofSpecJson(text);
      assertEquals(((InferenceTransform<?>) entry.getValue()).urn(), inference.urn());
      assertEquals(MAPPER.readTree(text), MAPPER.readTree(inference.specJson()));
    }
  }
}
