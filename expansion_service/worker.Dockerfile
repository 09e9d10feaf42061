# SDK worker image for runners that start Python workers from containers (Dataflow,
# Flink/Spark with the DOCKER environment): Beam's Python SDK image plus crossinfer.
#   docker build -f expansion_service/worker.Dockerfile -t crossinfer/beam-worker:2.77.0 .
# Java pipelines point at it with
#   --sdkHarnessContainerImageOverrides=.*python.*,crossinfer/beam-worker:2.77.0
# and the expansion service with --environment docker --environment-config crossinfer/beam-worker:2.77.0
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/crossinfer
COPY pyproject.toml constraints.txt README.md ./
COPY python ./python
COPY expansion_service/install.sh ./expansion_service/

ARG CROSSINFER_EXTRAS=all
RUN ./expansion_service/install.sh --python /usr/local/bin/python --extras "${CROSSINFER_EXTRAS}"

# Beam's SDK harness boot binary stays the entry point.
ENTRYPOINT ["/opt/apache/beam/boot"]
