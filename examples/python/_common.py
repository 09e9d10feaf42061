"""Shared by the examples: demo models on the digits data, and printing results."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

import apache_beam as beam

from crossinfer.demo import DemoModels, digits, train_demo_models

MODELS_DIR = Path(os.environ.get("CROSSINFER_DEMO_DIR", ".work/demo_models"))


def demo_models() -> DemoModels:
    return train_demo_models(MODELS_DIR)


def digit_rows(n: int | None = None) -> list[beam.Row]:
    x, y = digits()
    n = len(x) if n is None else n
    return [beam.Row(id=i, key=f"user-{i % 500}", label_true=int(y[i]),
                     features=x[i].tolist()) for i in range(n)]


class Summary(beam.PTransform):
    """Counts and accuracy per path, printed once the pipeline ends."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title

    def expand(self, results):
        return (results
                | beam.Map(lambda r: (r.path, (1, int(r.label == r.label_true))))
                | beam.CombinePerKey(lambda vs: tuple(map(sum, zip(*vs, strict=False))))
                | beam.combiners.ToList()
                | beam.Map(_print_summary, self.title))


def _print_summary(per_path: list, title: str) -> None:
    print(f"== {title}")
    for path, (count, correct) in sorted(per_path):
        print(f"   {path:<50} {count:>5} rows   accuracy {correct / count:.3f}")


def print_failures(failures: list) -> None:
    by_node: dict[str, Counter] = defaultdict(Counter)
    for f in failures:
        by_node[f.node][f.error] += 1
    for node, errors in by_node.items():
        for error, count in errors.items():
            print(f"   failure at {node}: {error} (x{count})")
