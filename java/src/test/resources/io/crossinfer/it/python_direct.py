"""Python-direct reference results for the Java end-to-end tests.

Runs each spec with crossinfer's Python transform for its kind (``crossinfer.ABTest``,
``Sequence``, ``Keyed``, ``Model``) over the same rows the Java pipeline reads, every run a
branch of one pipeline, and writes what came out:

    python python_direct.py JOB.json OUT.json [--job-endpoint HOST:PORT --job-name NAME]

By default the pipeline runs on Beam's FnApiRunner, in this process. With
``--job-endpoint`` it goes to that portable job server (``PortableRunner``), its
steps in a crossinfer worker pool this script starts (``python -m
crossinfer.expansion.worker_pool --processes``, the ``EXTERNAL`` environment a
cluster uses, each SDK worker a process of its own); each result then also
says which process made it (``pid``), and OUT.json the pool's (``pool_pid``).

JOB.json: {"runs": {"name": {"spec": <spec document>,
                             "rows": [{"id", "key", "digit", "features"}...]}, ...},
           "key_field": "key", "allowed_classes": [...]}  (allowed_classes: optional)
OUT.json: {"name": {"results": [{"id", "model", "path", "label", "score", "inference"}...],
                    "failures": [{"id", "node", "error"}...]}, ...}
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import apache_beam as beam
import crossinfer
from apache_beam.options.pipeline_options import PipelineOptions
from crossinfer.expansion.local import WorkerPool, start_child
from crossinfer.expansion.worker_pool import READY
from crossinfer.policy import BUILTIN_CLASSES

TRANSFORMS = {
    crossinfer.ABTestNode: crossinfer.ABTest,
    crossinfer.SequenceNode: crossinfer.Sequence,
    crossinfer.KeyedNode: crossinfer.Keyed,
    crossinfer.ModelNode: crossinfer.Model,
}


def add_run(p, name, rows, spec, key_field, policy, out_dir):
    transform = TRANSFORMS[type(crossinfer.load_spec(spec, policy).node)]
    outs = (p | f"Rows {name}" >> beam.Create([beam.Row(**r) for r in rows])
              | f"Infer {name}" >> transform(spec, key_field=key_field, policy=policy))
    (outs.results
     | f"Results {name}" >> beam.Map(lambda r: json.dumps({
         "id": r.id, "model": r.model, "path": r.path, "label": r.label, "score": r.score,
         "inference": list(r.inference), "pid": os.getpid()}))
     | f"Write results {name}" >> beam.io.WriteToText(
         os.path.join(out_dir, f"{name}.results"), shard_name_template=""))
    (outs.failures
     | f"Failures {name}" >> beam.Map(lambda f: json.dumps({
         "id": f.element.id, "node": f.node, "error": f.error}))
     | f"Write failures {name}" >> beam.io.WriteToText(
         os.path.join(out_dir, f"{name}.failures"), shard_name_template=""))


def _read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("job")
    parser.add_argument("out")
    parser.add_argument("--job-endpoint")
    parser.add_argument("--job-name", default="crossinfer-python")
    args = parser.parse_args()
    with open(args.job) as f:
        job = json.load(f)
    policy = crossinfer.LoadPolicy(
        allowed_classes=(*BUILTIN_CLASSES, *job.get("allowed_classes", [])))
    pool = None
    if args.job_endpoint:
        # Worker processes run `python`: this interpreter's.
        env = dict(os.environ, PATH=os.pathsep.join(
            [os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
        process, line = start_child(
            ["-m", "crossinfer.expansion.worker_pool", "--port", "0", "--exit-with-parent",
             "--processes"], READY, name="the worker pool", stdin=subprocess.PIPE, env=env)
        pool = WorkerPool(process, line[len(READY):].strip())
        options = PipelineOptions([
            "--runner=PortableRunner", f"--job_endpoint={args.job_endpoint}",
            "--environment_type=EXTERNAL", f"--environment_config={pool.address}",
            f"--job_name={args.job_name}",
            # Flink closes a job's workers between its stages unless told to keep them.
            "--environment_cache_millis=30000"])
    else:
        options = PipelineOptions(["--runner=FnApiRunner"])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with beam.Pipeline(options=options) as p:
                for name, run in job["runs"].items():
                    add_run(p, name, run["rows"], run["spec"], job.get("key_field", "key"),
                            policy, tmp)
            out = {name: {"results": _read(os.path.join(tmp, f"{name}.results")),
                          "failures": _read(os.path.join(tmp, f"{name}.failures"))}
                   for name in job["runs"]}
    finally:
        if pool is not None:
            pool.stop()
    if pool is not None:
        out["pool_pid"] = pool.process.pid
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
