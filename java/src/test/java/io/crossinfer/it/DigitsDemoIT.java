package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import io.crossinfer.examples.DigitsDemo;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.Test;

/**
 * The Java demo (examples/java) runs end to end and prints its report, ending with the A/B
 * test's experiment report (the pipeline's rows, then {@code crossinfer report}'s summary and
 * HTML page); here on Prism.
 */
public class DigitsDemoIT {
  @Test
  public void demoRunsTheAbTestAndTheSequenceAndReportsEveryRow() throws Exception {
    E2e.prism();
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    int code;
    Path outDir = E2e.freshDir("demo");
    try (PrintStream out = new PrintStream(bytes, true, StandardCharsets.UTF_8)) {
      code =
          DigitsDemo.run(
              new String[] {
                "--runner=prism",
                "--limit=200",
                "--models=" + E2e.models(),
                "--out=" + outDir,
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

    // The experiment report: the pipeline's rows (through the service), then the CLI's.
    assertTrue(report, report.contains("== Experiment report of digits_ab"));
    assertTrue(
        report, report.matches("(?s).*\\n  control +\\d+ +0 .*\\[0\\.\\d+, [01]\\.\\d+\\].*"));
    assertTrue(
        report, report.contains("sample-ratio mismatch (chi-square against the weights): p="));
    assertTrue(report, report.contains("treatment - control: accuracy "));
    // withTiming() on the A/B: latency percentiles for each arm, in the pipeline's report rows
    // and in the CLI's summary (2 + 2 lines; "-" there would mean the rows carry no timing).
    assertTrue(report, report.contains("latency p50/p95/p99 ms per element"));
    assertTrue(report, report.contains("Experiment digits_ab: 200 routed elements"));
    Matcher latency =
        Pattern.compile(
                "^  (control|treatment) .*\\s(\\d[\\d.e+-]*)/(\\d[\\d.e+-]*)/(\\d[\\d.e+-]*)$",
                Pattern.MULTILINE)
            .matcher(report);
    int lines = 0;
    while (latency.find()) {
      lines++;
      double p50 = Double.parseDouble(latency.group(2));
      double p99 = Double.parseDouble(latency.group(4));
      assertTrue(latency.group(), p50 > 0 && p50 <= p99);
    }
    assertEquals(report, 4, lines);
    assertTrue(report, report.matches("(?s).*\\n  Decision: .*; SRM (ok|FAILED) \\(p=.*"));
    Matcher html = Pattern.compile("HTML report: (\\S+)").matcher(report);
    assertTrue(report, html.find());
    Path page = Paths.get(html.group(1));
    assertEquals(outDir.resolve("experiment-report.html"), page);
    String text = Files.readString(page);
    assertTrue(text, text.contains("id=\"plot-metric\"") && text.contains("id=\"plot-labels\""));
  }
}
