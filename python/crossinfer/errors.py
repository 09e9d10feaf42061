"""The base of every exception crossinfer raises on purpose.

``except CrossinferError`` catches a refused spec, request, payload, class,
location or setting, and a model that could not be loaded - never a bug.
Each subclass keeps its standard base too (``ValueError`` for bad input,
``RuntimeError`` for a failed load, ``Exception`` for a refusal under load), so
code written against those bases still works:

* :class:`crossinfer.spec.SpecError` - an invalid spec, one line per field path;
* :class:`crossinfer.policy.ClassRefused`, :class:`crossinfer.policy.LocationRefused`;
* :class:`crossinfer.handlers.ModelLoadError`,
  :class:`crossinfer.handlers.files.FileRefused` (an ``OSError``);
* the expansion service's ``PayloadError``, ``RequestRefused``,
  ``InputSchemaError``, ``EnvironmentConfigError``, ``Busy``, ``TimedOut``;
* :class:`crossinfer.experiments.ReportSettingsError`.
"""

from __future__ import annotations


class CrossinferError(Exception):
    """Something crossinfer refused or could not do; the message says what and where."""
