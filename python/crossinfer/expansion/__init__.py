"""crossinfer's Beam expansion service, and a client helper for Python pipelines.

* ``crossinfer-expansion-service`` / ``python -m crossinfer.expansion``: the
  service (:mod:`.service`).
* :func:`external_inference`: call a running service from a Python pipeline
  (:mod:`.client`), the way a Java or Go pipeline does.

The wire contract (URNs, payload, output schemas) is docs/wire-contract.md.
Importing this package does not import the service's gRPC servicer.
"""

from crossinfer.expansion.client import ExternalInference, external_inference
from crossinfer.expansion.payload import encode_payload
from crossinfer.expansion.urns import (
    AB_TEST_URN,
    FAILURES_TAG,
    KEYED_URN,
    MODEL_URN,
    RESULTS_TAG,
    SEQUENCE_URN,
    urn_for_node,
)

__all__ = [
    "AB_TEST_URN",
    "FAILURES_TAG",
    "KEYED_URN",
    "MODEL_URN",
    "RESULTS_TAG",
    "SEQUENCE_URN",
    "ExternalInference",
    "encode_payload",
    "external_inference",
    "urn_for_node",
]
