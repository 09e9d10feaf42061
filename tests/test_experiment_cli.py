"""``crossinfer report``: result files written by real A/B and mirror pipelines ->
the same report rows as the in-pipeline transform, a text decision, and an HTML
report whose plots a real browser (Debian's headless Chromium) renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest

import crossinfer as ci
from crossinfer.experiments import ExperimentReport
from crossinfer.experiments.cli import main
from crossinfer.experiments.io import WriteForReport
from crossinfer.rows import field_dict
from experiment_fixtures import Zoo, ab, train_zoo
from support import STORE, Collect


def _timed(row: Any) -> beam.Row:
    """Timing fields as the engine is to write them (phase 2)."""
    values = field_dict(row)
    i = values["id"]
    values["model_ms"] = [0.05 + (i % 97) * 0.001] if "/control/" in values["path"] else \
        [0.2 + (i % 89) * 0.004]
    values["batch_size"] = [64] if "/control/" in values["path"] else [16]
    return beam.Row(**values)


def _dump(row: Any) -> str:
    values = field_dict(row)
    if "element" in values:
        values["element"] = field_dict(values["element"])
    return json.dumps(values)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two pipelines' result files, and their in-pipeline reports."""
    zoo: Zoo = train_zoo(tmp_path_factory.mktemp("zoo"))
    out = tmp_path_factory.mktemp("written")
    rows = [beam.Row(**r.as_dict(), ts=100 * j) for j, r in enumerate(zoo.rows())]
    broken = [beam.Row(id=10_000 + i, key=f"b{i}", features=[1.0] * 63, truth=0, ts=100 * i)
              for i in range(12)]
    good, good2 = zoo.node("good"), zoo.node("good", "good2")
    # tag -> (the A/B node run, its input, the spec it is analysed with)
    experiments = {
        "ab": (ab("digits_ab", zoo.node("good"), zoo.node("bad"), seed=7), rows + broken),
        "mirror": (ab("shadow", zoo.node("good"), zoo.node("small"), split="mirror"),
                   rows + broken),
        # a sound hash split on 4 heavy keys: 898 elements, 4 units of assignment
        "heavy": (ab("heavy", good, good2, split="hash"),
                  [beam.Row(**{**r.as_dict(), "key": f"k{j % 4}"}) for j, r in enumerate(rows)]),
        # a broken hash split: routed 60/40 (one key per element), analysed as 50/50
        "skewed": (ab("skewed", good, good2, split="hash", weights=(60, 40)), rows),
    }
    planned = {tag: node for tag, (node, _) in experiments.items()}
    planned["skewed"] = ab("skewed", good, good2, split="hash")
    with beam.Pipeline(runner="FnApiRunner") as p:
        for tag, (node, elements) in experiments.items():
            result = (p | f"{tag}/in" >> beam.Create(elements)
                      | f"{tag}/ab" >> ci.ABTest(node))
            result = ci.InferenceOutputs(result.results | f"{tag}/t" >> beam.Map(_timed),
                                         result.failures)
            _ = result | f"{tag}/jsonl" >> WriteForReport(
                str(out / tag / "report"), ground_truth="truth", time_field="ts")
            _ = result | f"{tag}/parquet" >> WriteForReport(
                str(out / tag / "parquet" / "report"), "parquet", ground_truth="truth",
                time_field="ts")
            _ = (result.results | f"{tag}/raw" >> beam.Map(_dump)
                 | f"{tag}/rawr" >> beam.io.WriteToText(str(out / tag / "raw" / "results"),
                                                       file_name_suffix=".jsonl"))
            _ = (result.failures | f"{tag}/rawf" >> beam.Map(_dump)
                 | f"{tag}/rawff" >> beam.io.WriteToText(str(out / tag / "raw" / "failures"),
                                                        file_name_suffix=".jsonl"))
            report = result | f"{tag}/report" >> ExperimentReport(planned[tag],
                                                                  ground_truth="truth")
            _ = report.arms | f"{tag}/a" >> beam.Map(Collect(f"cli/{tag}/arms"))
            _ = report.pairs | f"{tag}/p" >> beam.Map(Collect(f"cli/{tag}/pairs"))
            if tag == "heavy":
                _ = result.results | f"{tag}/r" >> beam.Map(Collect(f"cli/{tag}/results"))
    for tag, node in planned.items():
        (out / f"{tag}.json").write_text(json.dumps(
            json.loads(ci.spec.spec_to_json(ci.InferenceSpec(node)))))
    return {"dir": out, **{key: STORE.pop(key) for key in list(STORE) if key.startswith("cli/")}}


def _report(written: dict[str, Any], tag: str, source: str, *extra: str,
            capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, list[dict[str, Any]]], str]:
    out: Path = written["dir"]
    rows = out / f"{tag}-{source}.jsonl"
    sources = {"jsonl": [str(out / tag / "report-*.jsonl")],
               "parquet": [str(out / tag / "parquet")],
               "raw": [str(out / tag / "raw" / "results-*"), "--failures",
                       str(out / tag / "raw" / "failures-*"), "--ground-truth", "truth",
                       "--time-field", "ts"]}[source]
    assert main(["report", *sources, "--spec", str(out / f"{tag}.json"), "--json", str(rows),
                 *extra]) == 0
    text = capsys.readouterr().out
    found: dict[str, list[dict[str, Any]]] = {"arm": [], "pair": [], "window": [],
                                              "window_pair": []}
    for line in rows.read_text().splitlines():
        row = json.loads(line)
        found[row.pop("kind")].append(row)
    return found, text


def _same(file_rows: list[dict[str, Any]], pipeline_rows: list[Any], key: str) -> None:
    expected = {getattr(r, key): r._asdict() for r in pipeline_rows}
    assert {r[key] for r in file_rows} == set(expected)
    for row in file_rows:
        want = expected[row[key]]
        for field, value in row.items():
            if isinstance(value, float):
                # the same values combined in another order: sums differ in the last bits
                assert value == pytest.approx(want[field], rel=1e-9, abs=1e-12), field
            else:
                assert value == want[field], field


@pytest.mark.parametrize("source", ["jsonl", "parquet", "raw"])
def test_file_reports_equal_the_pipeline_report(written: dict[str, Any], source: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for tag in ("ab", "mirror"):
        found, _ = _report(written, tag, source, capsys=capsys)
        _same(found["arm"], written[f"cli/{tag}/arms"], "arm")
        _same(found["pair"], written[f"cli/{tag}/pairs"], "treatment")


def test_the_summary_says_the_decision(written: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _, text = _report(written, "ab", "jsonl", capsys=capsys)
    assert "Decision: control better than treatment at p=" in text
    assert "SRM ok (p=" in text
    assert len(text.splitlines()) <= 25  # one screen
    _, text = _report(written, "mirror", "jsonl", capsys=capsys)
    assert "agreement" in text and "SRM not applicable (mirror)" in text


def test_windows_follow_the_time_field(written: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    found, _ = _report(written, "ab", "jsonl", "--window", "10", capsys=capsys)
    starts = sorted({w["window_start_ms"] for w in found["window"]})
    assert starts == list(range(0, 90_000, 10_000))  # ts = 100 ms per row, 898 rows
    for arm in found["arm"]:
        assert sum(w["routed"] for w in found["window"] if w["arm"] == arm["arm"]) == \
            arm["routed"]


def test_cli_errors_name_the_problem(written: dict[str, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(written["dir"] / "ab.json")
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path / "none-*.jsonl"), "--spec", spec])
    assert exit_.value.code == 2
    assert "no result files match" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(written["dir"] / "ab" / "report-*.jsonl"), "--spec", spec,
              "--control", "nope"])
    assert "control: 'nope' is not an arm of 'digits_ab'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "x"}\n[1]\n')
    with pytest.raises(SystemExit):
        main(["report", str(bad), "--spec", spec])
    assert "bad.jsonl:2: not a JSON object" in capsys.readouterr().err
    # a spec file that is not JSON, or not there: the message names --spec and the file
    broken = tmp_path / "broken.json"
    broken.write_text('{"nope": ')
    for path in (broken, tmp_path / "absent.json"):
        with pytest.raises(SystemExit):
            main(["report", str(written["dir"] / "ab" / "report-*.jsonl"), "--spec", str(path)])
        assert f"error: --spec {path}: " in capsys.readouterr().err


def test_cli_refuses_a_mistyped_field_or_another_experiments_spec(
        written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out: Path = written["dir"]
    raw = [str(out / "ab" / "raw" / "results-*"), "--failures",
           str(out / "ab" / "raw" / "failures-*")]
    with pytest.raises(SystemExit) as exit_:
        main(["report", *raw, "--spec", str(out / "ab.json"), "--ground-truth", "trut"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--ground-truth: no result row has the field 'trut' (fields: " in err
    assert "truth" in err.split("fields: ")[1] and "features" in err
    # the mirror's spec on the A/B test's results
    with pytest.raises(SystemExit):
        main(["report", *raw, "--spec", str(out / "mirror.json"), "--ground-truth", "truth"])
    assert ("--spec: the spec's experiment is 'shadow', but the results are of 'digits_ab'"
            in capsys.readouterr().err)
    # --window without the time field (raw rows carry "ts", not event_time_ms)
    with pytest.raises(SystemExit):
        main(["report", *raw, "--spec", str(out / "ab.json"), "--window", "10"])
    assert ("--window: no row has the event time field 'event_time_ms' (name the field with "
            "--time-field)" in capsys.readouterr().err)
    # some rows without it: a warning, and the windows hold the others
    rows = [json.loads(line) for path in sorted((out / "ab").glob("report-*.jsonl"))
            for line in path.read_text().splitlines()]
    assert rows
    rows[0]["event_time_ms"] = None
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(partial), "--spec", str(out / "ab.json"), "--window", "10"]) == 0
    assert (f"warning: --window: 1 of {len(rows):,} rows have no event time in 'event_time_ms'"
            in capsys.readouterr().err)


@pytest.mark.parametrize("source", ["jsonl", "parquet", "raw"])
def test_a_hash_splits_srm_counts_distinct_keys(written: dict[str, Any], source: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A sound hash split on 4 heavy keys is not flagged (counted by element it
    would be), a broken one is; the rows equal the in-pipeline report's, and
    no warning: the rows carry their keys (report rows from WriteForReport,
    result rows through ``--key-field``)."""
    from scipy.stats import chisquare

    found, text = _report(written, "heavy", source, capsys=capsys)
    assert "warning" not in capsys.readouterr().err
    _same(found["arm"], written["cli/heavy/arms"], "arm")
    routed = [a["routed"] for a in found["arm"]]
    assert chisquare(routed).pvalue < 1e-3  # what counting elements says
    keys = [len({r.key for r in written["cli/heavy/results"] if f"/{a['arm']}/" in r.path})
            for a in found["arm"]]
    assert sum(keys) == 4
    srm = found["arm"][0]["srm_p_value"]
    assert srm == pytest.approx(chisquare(keys).pvalue, rel=1e-9) and srm > 1e-3
    assert "SRM ok (p=" in text
    found, text = _report(written, "skewed", source, capsys=capsys)
    _same(found["arm"], written["cli/skewed/arms"], "arm")
    assert found["arm"][0]["srm_p_value"] < 1e-3
    assert "SRM FAILED (p=" in text


def test_without_keys_a_hash_splits_srm_counts_elements_and_warns(
        written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Report rows written before ``key`` (or results without the key field):
    the SRM counts elements, and the CLI says so."""
    from scipy.stats import chisquare

    out: Path = written["dir"]
    rows = [json.loads(line) for path in sorted((out / "heavy").glob("report-*.jsonl"))
            for line in path.read_text().splitlines()]
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "key"}) + "\n"
                           for row in rows))
    for source in ([str(old)], [str(out / "heavy" / "raw" / "results-*"), "--key-field", "user"]):
        json_out = tmp_path / "report.jsonl"
        assert main(["report", *source, "--spec", str(out / "heavy.json"),
                     "--json", str(json_out)]) == 0
        err = capsys.readouterr().err
        assert "SRM counts elements, but a hash split assigns keys" in err, source
        arms = [json.loads(line) for line in json_out.read_text().splitlines()
                if json.loads(line)["kind"] == "arm"]
        assert arms[0]["srm_p_value"] == pytest.approx(
            chisquare([a["routed"] for a in arms]).pvalue, rel=1e-9)
    # not a hash split: no warning
    assert main(["report", str(out / "ab" / "report-*.jsonl"), "--spec",
                 str(out / "ab.json")]) == 0
    assert "SRM counts elements" not in capsys.readouterr().err


# ------------------------------------------------------------------ in a browser

#: Added to a copy of the report: writes what the browser rendered into the DOM.
_CHECK = """<script>
window.addEventListener('load', () => {
  const figures = [...document.querySelectorAll('figure')].map(f => {
    const img = f.querySelector('img'), box = img.getBoundingClientRect();
    return {id: f.id, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
            shown: [box.width, box.height]};
  });
  const pre = document.createElement('pre');
  pre.id = 'render-check';
  pre.textContent = JSON.stringify(figures);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: `make browser` installs Debian's package")
        pytest.skip("SKIPPED: no chromium on PATH (`make browser` installs Debian's package "
                    "with apt-get, as root)")
    return found


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars", *args],
        capture_output=True, text=True, timeout=180, check=True)


def render_checked(page: Path, screenshot: Path) -> list[dict[str, Any]]:
    """What Chromium rendered of ``page`` (each figure's image sizes), and a screenshot."""
    harness = page.with_name(page.stem + ".check.html")
    harness.write_text(page.read_text().replace("</body>", _CHECK + "</body>"))
    dom = _browser("--virtual-time-budget=10000", "--dump-dom", harness.as_uri()).stdout
    start = dom.index('<pre id="render-check">') + len('<pre id="render-check">')
    figures = json.loads(dom[start:dom.index("</pre>", start)].replace("&quot;", '"'))
    _browser("--window-size=1200,2400", f"--screenshot={screenshot}", page.as_uri())
    return figures


@pytest.mark.parametrize(("tag", "plots"), [
    ("ab", {"plot-metric", "plot-latency", "plot-labels", "plot-share"}),
    ("mirror", {"plot-metric", "plot-latency", "plot-labels", "plot-flips", "plot-agreement"}),
])
def test_the_html_report_shows_every_plot_in_a_browser(
        written: dict[str, Any], tag: str, plots: set[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    out: Path = written["dir"]
    page = out / f"{tag}.html"
    _report(written, tag, "jsonl", "--window", "10", "--html", str(page), capsys=capsys)
    text = page.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    # per-window counts, times from the first window (ts = 100 ms per row from 0) and in UTC
    assert "<h2>Windows</h2>" in text and "td { white-space: nowrap; }" in text
    windows = re.findall(r"<tr><td>([\d.]+)-([\d.]+)</td><td>([^<]+)</td>"
                         r"<td class=\"name\">(\w+)</td><td>([\d,]+)</td>", text)
    assert {(a, b) for a, b, *_ in windows} == {(f"{10 * i}", f"{10 * (i + 1)}")
                                                for i in range(9)}
    assert ("0", "10", "1970-01-01 00:00:00 UTC") in {tuple(w[:3]) for w in windows}
    arms = {a["arm"]: a["routed"] for a in json.loads(
        "[" + ",".join(line for line in (out / f"{tag}-jsonl.jsonl").read_text().splitlines()
                       if '"kind": "arm"' in line) + "]")}
    for arm, routed in arms.items():
        assert sum(int(w[4].replace(",", "")) for w in windows if w[3] == arm) == routed
    if tag == "mirror":
        assert "mirrored elements" in text and "<th>agreement</th>" in text
    shot = Path(os.environ.get("CROSSINFER_SCREENSHOTS", out)) / f"experiment-report-{tag}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    figures = render_checked(page, shot)
    assert {f["id"] for f in figures} == plots
    for f in figures:
        assert f["complete"] and min(f["natural"]) > 100 and min(f["shown"]) > 100, f
    assert shot.stat().st_size > 20_000  # a page of plots, not a blank one


def test_the_html_report_of_perfect_arms_without_timing_or_windows(
        written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The A/B's report rows with every label made right and no timing fields: a
    100% accuracy (Wilson's upper bound is then a rounding error below the value,
    which matplotlib refused as a negative error bar), and a page that says why
    the latency and share-over-time plots are missing, with no mirror columns."""
    from statsmodels.stats.proportion import proportion_confint

    by_path: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((written["dir"] / "ab").glob("report-*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["failed"]:
                continue
            row["label"] = int(row["truth"])
            row["model_ms"] = row["batch_size"] = None
            by_path.setdefault(row["path"], []).append(row)
    perfect = tmp_path / "perfect.jsonl"
    with perfect.open("w") as f:
        for rows in by_path.values():
            # as many rows as give an upper bound below 1.0 (143 of 143 does, and so
            # does about a third of counts)
            n = max(n for n in range(1, len(rows) + 1)
                    if proportion_confint(n, n, 1 - 0.95, method="wilson")[1] < 1.0)
            f.writelines(json.dumps(row) + "\n" for row in rows[:n])
    page = tmp_path / "perfect.html"
    assert main(["report", str(perfect), "--spec", str(written["dir"] / "ab.json"),
                 "--html", str(page)]) == 0
    assert "accuracy" in capsys.readouterr().out
    text = page.read_text()
    assert 'id="plot-metric"' in text and 'id="plot-latency"' not in text
    assert "No latency plot: the result rows carry no timing" in text
    assert "No share vs weights over time plot" in text
    assert "<th>agreement</th>" not in text and "<th>p value</th>" in text


def test_rows_with_malformed_timing_are_left_out_of_the_latency(
        written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file's rows may hold anything (a fresh reviewer's): finite times whose
    sum overflows, a batch size no coder takes, text or booleans for numbers, more
    stages than the route. The report leaves their timing out instead of failing
    or inventing stages; the other rows' latency is reported."""
    out: Path = written["dir"]
    rows = [json.loads(line) for path in sorted((out / "ab").glob("report-*.jsonl"))
            for line in path.read_text().splitlines()]
    rows = [r for r in rows if not r["failed"]][:40]
    for i, row in enumerate(rows):
        row["model_ms"], row["batch_size"] = [0.5 + i % 3], [8]
    bad = ([1e308, 1e308], [1, 1]), ([1.0], [10**30]), (["1"], [8]), ([True], [8]), \
        ([1.0] * 10_000, None), ([1.0], [1.5])
    for row, (ms, size) in zip(rows, bad, strict=False):
        row["model_ms"], row["batch_size"] = ms, size
    path = tmp_path / "timing.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    json_out = tmp_path / "report.jsonl"
    assert main(["report", str(path), "--spec", str(out / "ab.json"), "--json",
                 str(json_out)]) == 0
    capsys.readouterr()
    arms = [json.loads(line) for line in json_out.read_text().splitlines()
            if json.loads(line)["kind"] == "arm"]
    assert sum(a["latency_count"] for a in arms) == len(rows) - len(bad)
    # one stage per arm with timing, none invented (an arm without any: none)
    assert all(len(a["stages"]) == (a["latency_count"] > 0) for a in arms), arms
    assert all((a["latency_p99_ms"] or 0) <= 2.5 * 1.011 for a in arms)


def test_result_rows_with_labels_that_are_no_integer_count_as_unlabelled(
        written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Result rows whose ``label`` is text that is no integer, NaN, an infinity
    or past int64 are results without a label, as the pipeline's report reads
    them - not the end of the report (``int()`` of such a label raised, and
    the CLI stopped at the first)."""
    out: Path = written["dir"]
    spec = json.loads((out / "ab.json").read_text())
    node = spec.get("node", spec)
    control, treatment = (a["name"] for a in node["arms"])
    rows = [{"path": f"{node['name']}/{arm}/m", "label": 1, "score": 0.5, "digit": 1, "id": i}
            for i in range(8) for arm in (control, treatment)]
    for row, label in zip(rows[::2], ("abc", float("nan"), float("inf"), 2 ** 70), strict=False):
        row["label"] = label  # (control's first four)
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    json_out = tmp_path / "report.jsonl"
    assert main(["report", str(path), "--spec", str(out / "ab.json"), "--ground-truth",
                 "digit", "--json", str(json_out)]) == 0
    capsys.readouterr()
    found = {a["arm"]: a for a in map(json.loads, json_out.read_text().splitlines())
             if a["kind"] == "arm"}
    assert {arm: (a["count"], a["metric_count"]) for arm, a in found.items()} == {
        control: (8, 4), treatment: (8, 8)}


def test_report_rows_with_numeric_keys_and_ids_are_read_as_text(
        written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A report-row file whose ``key`` and ``id`` are numbers (another writer's,
    or a Parquet integer column): read as their text, the same report as with
    text keys - not a traceback (a fresh reviewer's finding)."""
    out: Path = written["dir"]
    rows = [json.loads(line) for path in sorted((out / "heavy").glob("report-*.jsonl"))
            for line in path.read_text().splitlines()]
    numeric = tmp_path / "numeric.jsonl"
    numeric.write_text("".join(json.dumps({
        **r, "key": None if r["key"] is None else int(r["key"].lstrip("k")),
        "id": None if r["id"] is None else len(r["id"])}) + "\n" for r in rows))
    found = {}
    for name, path in (("text", out / "heavy" / "report-*.jsonl"), ("numeric", numeric)):
        json_out = tmp_path / f"{name}.jsonl"
        assert main(["report", str(path), "--spec", str(out / "heavy.json"), "--json",
                     str(json_out)]) == 0
        found[name] = [json.loads(line) for line in json_out.read_text().splitlines()
                       if json.loads(line)["kind"] == "arm"]
    capsys.readouterr()
    assert [a["srm_p_value"] for a in found["numeric"]] == \
        [a["srm_p_value"] for a in found["text"]]


def test_a_hash_split_with_some_rows_without_keys_says_how_many_are_left_out(
        written: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Some rows without a key: the SRM counts the distinct keys of the others,
    and the CLI says how many rows it left out (a fresh reviewer found them
    dropped silently); an empty file warns about nothing."""
    out: Path = written["dir"]
    rows = [json.loads(line) for path in sorted((out / "heavy").glob("report-*.jsonl"))
            for line in path.read_text().splitlines()]
    half = tmp_path / "half.jsonl"
    half.write_text("".join(json.dumps({**r, "key": None if i % 2 else r["key"]}) + "\n"
                            for i, r in enumerate(rows)))
    assert main(["report", str(half), "--spec", str(out / "heavy.json")]) == 0
    left_out = sum(1 for i, r in enumerate(rows) if i % 2 and not r["failed"])
    assert f"warning: {left_out:,} result rows have no key ('key')" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    main(["report", str(empty), "--spec", str(out / "heavy.json")])
    assert "key" not in capsys.readouterr().err
