package io.crossinfer.it;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import io.crossinfer.examples.DigitsData;
import java.util.List;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.coders.SerializableCoder;
import org.apache.beam.sdk.testing.TestStream;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.Reshuffle;
import org.apache.beam.sdk.transforms.windowing.FixedWindows;
import org.apache.beam.sdk.transforms.windowing.Window;
import org.apache.beam.sdk.values.Row;
import org.joda.time.Duration;
import org.junit.Test;

/** {@link RunnerBoundary} on pipelines without crossinfer transforms (no service needed). */
public class RunnerBoundaryTest {
  private static org.apache.beam.sdk.options.PipelineOptions options() {
    return E2e.portableOptions("localhost:1"); // never run
  }

  @Test
  public void createReshuffleAndFixedWindowsNeedNoJavaObjectOnTheRunner() {
    Pipeline p = Pipeline.create(options());
    p.apply(Create.of(List.of(DigitsData.row(1, "k", 1, List.of(1.0)))).withRowSchema(DigitsData.SCHEMA))
        .apply(Reshuffle.viaRandomKey())
        .apply(Window.<Row>into(FixedWindows.of(Duration.standardSeconds(10))));
    assertEquals(List.of(), RunnerBoundary.javaObjectsForTheRunner(p));
  }

  @Test
  public void aTestStreamWithAJavaCoderIsFound() {
    Pipeline p = Pipeline.create(options());
    p.apply(TestStream.create(SerializableCoder.of(String.class)).addElements("a").advanceWatermarkToInfinity());
    List<String> found = RunnerBoundary.javaObjectsForTheRunner(p);
    assertEquals(found.toString(), 1, found.size());
    assertTrue(found.get(0), found.get(0).startsWith("TestStream"));
  }
}
