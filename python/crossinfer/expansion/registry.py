"""Schema ids the service chooses, and a bound on the types Beam keeps for them.

Beam keeps one NamedTuple type per schema id for the life of the process
(``SCHEMA_REGISTRY``, and the coder registry), and reuses a registered id
whatever fields a later schema with that id has. So:

* **No client-chosen id reaches that registry.** Every schema a request
  brings (the input coder's, nested rows' included, and the payload's) gets
  an id derived from its content (:func:`content_id`): the same id always
  means the same fields, and a client cannot pick an id crossinfer or another
  client uses (that would take a SHA-1 preimage).
* **What requests add is bounded.** Content-derived ids are kept in a budget
  of :data:`MAX_KEPT_FIELDS` fields; when an expansion ends over budget, the
  types no running expansion has used are forgotten, least recently used
  first (a later request with the same schema makes them again). Without
  this, a client sending ever new schemas grew the process without end.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator

from apache_beam.portability.api import schema_pb2

#: Fields of all the types kept for content-derived schema ids (about 0.5 KB each).
MAX_KEPT_FIELDS = 200_000


class SchemaBudget:
    """Content-derived schema ids in use, and the eviction of the oldest.

    Ids are stamped with the expansion that last computed them (each request
    computes the ids of its schemas, so a reused id is stamped again); an
    expansion that ends over budget evicts ids stamped before the oldest
    expansion still running.
    """

    def __init__(self, max_fields: int = MAX_KEPT_FIELDS) -> None:
        self.max_fields = max_fields
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[int, int]] = OrderedDict()  # id -> fields, stamp
        self._fields = 0
        self._next = 0
        self._running: set[int] = set()  # stamps of the expansions running
        self._local = threading.local()

    @property
    def kept_fields(self) -> int:
        """Fields of the types kept for content-derived ids now."""
        return self._fields

    @contextlib.contextmanager
    def expansion(self) -> Iterator[None]:
        """Scope one request: ids computed in this thread are stamped with it, and
        types over budget are evicted when it ends."""
        with self._lock:
            stamp = self._next
            self._next += 1
            self._running.add(stamp)
        self._local.stamp = stamp
        try:
            yield
        finally:
            self._local.stamp = None
            with self._lock:
                self._running.discard(stamp)
                self._trim()

    def note(self, schema_id: str, fields: int) -> None:
        """Record that the current expansion uses ``schema_id`` (``fields`` fields)."""
        with self._lock:
            stamp = getattr(self._local, "stamp", None)
            if stamp is None:  # outside any request (warm-up, tests): as used just now
                stamp = self._next
            old = self._entries.pop(schema_id, None)
            if old is not None:
                self._fields -= old[0]
            self._entries[schema_id] = (fields, stamp)
            self._fields += fields

    def _trim(self) -> None:
        oldest_running = min(self._running, default=self._next)
        while self._fields > self.max_fields and self._entries:
            schema_id, (fields, stamp) = next(iter(self._entries.items()))
            if stamp >= oldest_running:
                return  # a running expansion may use it (entries are in stamp order)
            del self._entries[schema_id]
            self._fields -= fields
            _forget(schema_id)


def _forget(schema_id: str) -> None:
    """Drop Beam's type for ``schema_id`` (and its coder registration)."""
    from apache_beam.coders import typecoders
    from apache_beam.typehints.schema_registry import SCHEMA_REGISTRY

    entry = SCHEMA_REGISTRY.by_id.pop(schema_id, None)
    if entry is not None:
        typecoders.registry._coders.pop(entry[0], None)


#: The service's budget (Beam's registry is process-wide, so is this).
BUDGET = SchemaBudget()


def content_id(namespace: uuid.UUID, schema: schema_pb2.Schema) -> str:
    """A UUID derived from ``schema``'s content (its id left out) in ``namespace``,
    noted in :data:`BUDGET`. A UUID because Beam Java parses schema ids as UUIDs."""
    clean = schema_pb2.Schema()
    clean.CopyFrom(schema)
    clean.id = ""
    value = str(uuid.uuid5(namespace, clean.SerializeToString(deterministic=True).hex()))
    BUDGET.note(value, len(schema.fields))
    return value


#: Namespace of the ids of schemas a client sent.
CLIENT_NAMESPACE = uuid.UUID("3c0e7d52-1b8a-5f6e-9d40-7a2c1e5b9f03")


def with_content_ids(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """A copy of ``schema`` whose id, and the id of every row schema nested in its
    fields (in arrays, maps and logical types too), is derived from its content.
    Call it on schemas whose nesting is bounded (:mod:`.schemas` checks first)."""
    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    _rewrite(out)
    return out


def contained_types(t: schema_pb2.FieldType) -> list[schema_pb2.FieldType]:
    """The types ``t`` holds directly: an array's or iterable's element type, a
    map's key and value types, a logical type's representation and argument type
    (not a row's field types). Every walk over a client's types uses it, so none
    misses a place a type can hide."""
    kind = t.WhichOneof("type_info")
    if kind in ("array_type", "iterable_type"):
        return [getattr(t, kind).element_type]
    if kind == "map_type":
        return [t.map_type.key_type, t.map_type.value_type]
    if kind == "logical_type":
        argument = t.logical_type.argument_type
        return [t.logical_type.representation,
                *((argument,) if argument.WhichOneof("type_info") else ())]
    return []


def _rewrite(schema: schema_pb2.Schema) -> None:
    for f in schema.fields:
        stack = [f.type]
        while stack:
            t = stack.pop()
            if t.WhichOneof("type_info") == "row_type":
                _rewrite(t.row_type.schema)  # nested first: the parent's id covers them
            stack.extend(contained_types(t))
    schema.id = content_id(CLIENT_NAMESPACE, schema)
