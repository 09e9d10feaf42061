package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import io.crossinfer.examples.DigitsDemo;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.Test;

/** The Java demo (examples/java) runs end to end and prints its report; here on Prism. */
public class DigitsDemoIT {
  @Test
  public void demoRunsTheAbTestAndTheSequenceAndReportsEveryRow() throws Exception {
    E2e.prism();
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    int code;
    try (PrintStream out = new PrintStream(bytes, true, StandardCharsets.UTF_8)) {
      code =
          DigitsDemo.run(
              new String[] {
                "--runner=prism",
                "--limit=200",
                "--models=" + E2e.models(),
                "--out=" + E2e.freshDir("demo"),
              },
              out);
    }
    String report = bytes.toString(StandardCharsets.UTF_8);
    assertEquals(report, 0, code);
    assertTrue(report, report.contains("== A/B test digits_ab"));
    assertTrue(report, report.contains("digits_ab/control/digits_lr"));
    assertTrue(report, report.contains("digits_ab/treatment/digits_mlp"));
    assertTrue(report, report.contains("== Sequence digits_seq"));
    assertTrue(report, report.contains("digits_seq/digits_pca_mlp"));
    assertEquals(report, 2, report.split("results 200 \\+ failures 0 = 200 inputs", -1).length - 1);
  }
}
