"""The worker environment the expanded transforms run in, from the service flags.

The environment is stamped on every transform the service returns; the runner
starts Python SDK workers there. All four need the workers to have crossinfer
(and the frameworks the specs use) installed:

* ``loopback``: the service process hosts a worker pool on a port of its own,
  bound to 127.0.0.1 (development; no extra process). The expansion port never
  serves it: a worker pool runs any pipeline a runner sends it.
* ``external``: a worker pool at ``host:port``, e.g. started with
  ``python -m apache_beam.runners.worker.worker_pool_main --service_port=PORT``.
* ``process``: the runner starts ``COMMAND`` per worker (a Beam SDK ``boot``
  binary; Beam's ``{"command": ..., "env": {...}}`` JSON form is accepted too).
* ``docker``: the runner starts containers of ``IMAGE`` (an image with crossinfer
  installed, not Beam's plain Python SDK image).
"""

from __future__ import annotations

import json
import re

from apache_beam.transforms import environments as beam_env

from crossinfer.errors import CrossinferError

KINDS = ("loopback", "external", "process", "docker")

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")


class EnvironmentConfigError(CrossinferError, ValueError):
    """The environment flags do not describe a usable environment."""


def build_environment(kind: str, config: str | None,
                      loopback_address: str | None = None) -> beam_env.Environment:
    """A Beam Environment for ``--environment KIND --environment-config CONFIG``."""
    capabilities = beam_env.python_sdk_capabilities()
    if kind == "loopback":
        if not loopback_address:
            raise EnvironmentConfigError("loopback needs the address of the service's own "
                                         "worker pool")
        return beam_env.ExternalEnvironment(loopback_address, capabilities=capabilities)
    if kind == "external":
        if not config or not _HOST_PORT.fullmatch(config) or \
                int(config.rsplit(":", 1)[1]) > 65535:
            raise EnvironmentConfigError(
                f"--environment external needs --environment-config HOST:PORT of a worker "
                f"pool (port 0..65535), got {config!r}")
        return beam_env.ExternalEnvironment(config, capabilities=capabilities)
    if kind == "process":
        if not config:
            raise EnvironmentConfigError(
                "--environment process needs --environment-config COMMAND")
        if config.lstrip().startswith("{"):
            try:
                spec = json.loads(config)
                return beam_env.ProcessEnvironment(
                    spec["command"], os=spec.get("os", ""), arch=spec.get("arch", ""),
                    env=spec.get("env") or {}, capabilities=capabilities)
            except (ValueError, KeyError, TypeError) as exc:
                raise EnvironmentConfigError(
                    f"--environment-config: expected a command or "
                    f"{{\"command\": ..., \"env\": {{...}}}}: {exc}") from exc
        return beam_env.ProcessEnvironment(config, capabilities=capabilities)
    if kind == "docker":
        if not config:
            raise EnvironmentConfigError("--environment docker needs --environment-config "
                                         "IMAGE (an image with crossinfer installed)")
        return beam_env.DockerEnvironment(
            container_image=config, capabilities=beam_env.python_sdk_docker_capabilities())
    raise EnvironmentConfigError(
        f"--environment: expected one of {', '.join(KINDS)}, got {kind!r}")


def describe(environment: beam_env.Environment) -> str:
    """One line for the startup log."""
    if isinstance(environment, beam_env.ExternalEnvironment):
        return f"external worker pool at {environment.url}"
    if isinstance(environment, beam_env.ProcessEnvironment):
        return f"process {environment.command!r}"
    if isinstance(environment, beam_env.DockerEnvironment):
        return f"docker image {environment.container_image}"
    return repr(environment)
