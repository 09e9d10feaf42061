"""The engine: one unit in flight (a block of rows) through one runner.

``rows -> Assembler -> Block -> BlockRunner (per model node) -> Block -> Format -> outputs``

* :mod:`~crossinfer.engine.block`: :class:`Block`, the one unit in flight, and :class:`Failure`;
* :mod:`~crossinfer.engine.assemble`: input rows -> blocks of one feature shape;
* :mod:`~crossinfer.engine.runner`: prepare -> group by shape -> predict ->
  post-process -> isolate failures, for one model node;
* :mod:`~crossinfer.engine.emit`: finished blocks -> result and failure values.

Beam appears here only as the coder and metrics; the Beam transforms that
carry blocks between these steps are :mod:`crossinfer.patterns`.
"""

from crossinfer.engine.assemble import Assembler
from crossinfer.engine.block import Block, Failure, error_text
from crossinfer.engine.runner import BlockRunner

__all__ = ["Assembler", "Block", "BlockRunner", "Failure", "error_text"]
