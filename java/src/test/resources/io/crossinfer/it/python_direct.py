"""Python-direct reference results for the Java end-to-end tests.

Runs each spec with crossinfer's Python transform (``crossinfer.Inference``) on
Beam's FnApiRunner, in this process, over the same rows the Java pipeline
reads, and writes what came out:

    python python_direct.py JOB.json OUT.json

JOB.json: {"runs": {"name": {"spec": <spec document>,
                             "rows": [{"id", "key", "digit", "features"}...]}, ...},
           "key_field": "key", "allowed_classes": [...]}  (allowed_classes: optional)
OUT.json: {"name": {"results": [{"id", "model", "path", "label", "score", "inference"}...],
                    "failures": [{"id", "node", "error"}...]}, ...}
"""

import json
import os
import sys
import tempfile

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from crossinfer import Inference, LoadPolicy
from crossinfer.policy import BUILTIN_CLASSES


def run(rows, spec, key_field, policy):
    with tempfile.TemporaryDirectory() as tmp:
        results_path = os.path.join(tmp, "results.jsonl")
        failures_path = os.path.join(tmp, "failures.jsonl")
        with beam.Pipeline(runner=FnApiRunner()) as p:
            outs = (p | beam.Create([beam.Row(**r) for r in rows])
                      | Inference(spec, key_field=key_field, policy=policy))
            (outs.results
             | "results" >> beam.Map(lambda r: json.dumps({
                 "id": r.id, "model": r.model, "path": r.path, "label": r.label,
                 "score": r.score, "inference": list(r.inference)}))
             | "write results" >> beam.io.WriteToText(results_path, shard_name_template=""))
            (outs.failures
             | "failures" >> beam.Map(lambda f: json.dumps({
                 "id": f.element.id, "node": f.node, "error": f.error}))
             | "write failures" >> beam.io.WriteToText(failures_path, shard_name_template=""))
        return {"results": _read(results_path), "failures": _read(failures_path)}


def _read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(job_path, out_path):
    with open(job_path) as f:
        job = json.load(f)
    policy = LoadPolicy(allowed_classes=(*BUILTIN_CLASSES, *job.get("allowed_classes", [])))
    out = {name: run(r["rows"], r["spec"], job.get("key_field", "key"), policy)
           for name, r in job["runs"].items()}
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
