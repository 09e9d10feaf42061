"""A/B test and sequence inference on the digits data, directly from Python.

    .venv/bin/python examples/python/ab_and_sequence.py

* A/B: a hash split sticky on the user key sends ~90% of users to a
  scikit-learn LogisticRegression (control) and ~10% to a PyTorch MLP
  (treatment).
* Sequence: PCA (scikit-learn) -> an MLP on the 16 components (PyTorch).
Malformed rows come out on the failures output with their message.
"""

from __future__ import annotations

import json

import apache_beam as beam
from _common import Summary, demo_models, digit_rows

import crossinfer


def main() -> None:
    models = demo_models()
    ab_spec = json.loads((models.root / "ab.json").read_text())
    seq_spec = json.loads((models.root / "sequence.json").read_text())
    rows = [*digit_rows(), beam.Row(id=-1, key="user-x", label_true=0, features=[1.0, None])]

    with beam.Pipeline(runner="FnApiRunner") as p:
        digits = p | beam.Create(rows, reshuffle=False)
        ab = digits | "ABTest" >> crossinfer.ABTest(ab_spec)
        _ = ab.results | "SummariseAB" >> Summary("A/B test (hash split on key, 90/10)")
        _ = ab.failures | "PrintABFailures" >> beam.Map(
            lambda f: print(f"   A/B failure at {f.node}: id={f.element.id}: {f.error}"))

        seq = digits | "Sequence" >> crossinfer.Sequence(seq_spec)
        _ = seq.results | "SummariseSeq" >> Summary("Sequence (PCA -> MLP)")
        _ = seq.failures | "PrintSeqFailures" >> beam.Map(
            lambda f: print(f"   sequence failure at {f.node}: id={f.element.id}: {f.error}"))


if __name__ == "__main__":
    main()
