"""Drop one warning Beam logs on import, before anything imports Beam.

Importing ``apache_beam`` logs ``apitools not found, and bigquery client
libraries are not available ...`` to the root logger (and so configures it):
every start of the service, and its ``--help``, printed it. It concerns Google
Cloud client libraries crossinfer never uses; other messages are untouched.
"""

from __future__ import annotations

import logging


class _DropApitoolsNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_DropApitoolsNotice())
