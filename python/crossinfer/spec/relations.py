"""The rules that relate a spec's fields to each other, without the load policy.

Unique node names, arm names used once, keys routed once, ``min_batch_size <=
max_batch_size``. They are checked with the rest of validation
(:func:`crossinfer.spec.validate.validate_spec`), and also when some fields
break their own rule (:mod:`crossinfer.spec.codec` then reads the document
without the fields' rules and runs these on it), so one refusal lists both
kinds of problem, each with its field path. They only compare values, so they
never fail on a value that broke its own rule.
"""

from __future__ import annotations

from crossinfer.spec.nodes import ABTestNode, KeyedNode, ModelNode, Node, walk


def relation_problems(node: Node, path: str = "node") -> list[tuple[str, str]]:
    """``(field path, message)`` for each relation between fields that does not hold."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for at, each in walk(node, path):
        name = each.name
        if isinstance(name, str):
            if name in seen:
                problems.append((f"{at}.name", f"name {name!r} is already used at "
                                               f"{seen[name]}; node names must be unique "
                                               "within a spec"))
            else:
                seen[name] = f"{at}.name"
        if isinstance(each, ModelNode):
            problems += _batch_sizes(each, at)
        elif isinstance(each, ABTestNode):
            problems += _arm_names(each, at)
        elif isinstance(each, KeyedNode):
            problems += _route_keys(each, at)
    return problems


def _batch_sizes(node: ModelNode, at: str) -> list[tuple[str, str]]:
    low, high = node.batching.min_batch_size, node.batching.max_batch_size
    if isinstance(low, int) and isinstance(high, int) and low > high:
        return [(f"{at}.batching.min_batch_size",
                 f"{low} is larger than max_batch_size {high}")]
    return []


def _arm_names(node: ABTestNode, at: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    for i, arm in enumerate(node.arms):
        if not isinstance(arm.name, str):
            continue
        if arm.name in names:
            problems.append((f"{at}.arms[{i}].name", f"arm name {arm.name!r} is used twice"))
        names.add(arm.name)
    return problems


def _route_keys(node: KeyedNode, at: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    owner: dict[str, int] = {}
    for i, route in enumerate(node.routes):
        for key in route.keys:
            if key in owner:
                problems.append((f"{at}.routes[{i}].keys",
                                 f"key {key!r} is already routed by routes[{owner[key]}]"))
            owner.setdefault(key, i)
    return problems
