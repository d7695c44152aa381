"""The autoscaling world of the e2e test and the benchmark: an emulated API server
(``tests/kube_emu.py``, Pods ready ``ready_delay`` after creation), ``hewer operator`` as a
subprocess, and a pod runner that turns every Pod of a WorkerPool's Deployment into a real
SDK worker process with the Pod's environment, and kills it (SIGKILL: a busy worker killed
by a scale-down would show up as a retried task) when the Pod is deleted.

A recorder samples the Deployment's replicas (with times) so tests can count direction
changes; the pod runner keeps each Pod's start and end.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from e2e_support import Engine, _clean_environ, _hewer_command, _stop_process, free_port

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from kube_emu import EmuThread  # noqa: E402

REPO = _TESTS.parent
CRDS = REPO / "crds"
WORKER = Path(__file__).resolve().parent / "workers" / "autoscale_worker.py"
GROUP, VERSION, NS = "hewer.dev", "v1alpha1", "default"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass
class PodProc:
    name: str
    proc: subprocess.Popen[bytes]
    started: float
    ended: float | None = None


@dataclass
class PodRunner:
    """Watches the Pods of one pool and runs them (one thread, polling every 0.1 s)."""

    core: Any
    apps: Any
    pool: str
    log_dir: Path
    procs: dict[str, PodProc] = field(default_factory=dict)
    # (wall-clock time, Deployment spec.replicas) at every change
    replicas: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="pod-runner")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for p in self.procs.values():
            self._kill(p)

    def _env(self, pod: Any) -> dict[str, str]:
        env = _clean_environ()
        container = pod.spec.containers[0]
        for e in container.env or []:
            value = e.value
            if e.value_from is not None and e.value_from.secret_key_ref is not None:
                ref = e.value_from.secret_key_ref
                secret = self.core.read_namespaced_secret(ref.name, NS)
                value = base64.b64decode(secret.data[ref.key]).decode()
            elif e.value_from is not None and e.value_from.field_ref is not None:
                assert e.value_from.field_ref.field_path == "metadata.name"
                value = pod.metadata.name
            elif value is not None:  # the kubelet expands $(VAR) of earlier variables
                value = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)
            env[e.name] = value or ""
        return env

    def _spawn(self, pod: Any) -> None:
        container = pod.spec.containers[0]
        command = [*(container.command or []), *(container.args or [])]
        log = (self.log_dir / f"{pod.metadata.name}.log").open("wb")
        proc = subprocess.Popen(
            command,
            env=self._env(pod),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[pod.metadata.name] = PodProc(pod.metadata.name, proc, time.monotonic())

    def _kill(self, p: PodProc) -> None:
        if p.ended is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(timeout=5)
            p.ended = time.monotonic()

    def _loop(self) -> None:
        selector = f"hewer.dev/worker-pool={self.pool}"
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                dep = self.apps.read_namespaced_deployment(self.pool, NS)
                n = int(dep.spec.replicas or 0)
                if not self.replicas or self.replicas[-1][1] != n:
                    self.replicas.append((time.time(), n))
            with contextlib.suppress(Exception):
                pods = self.core.list_namespaced_pod(NS, label_selector=selector).items
                live = {
                    p.metadata.name: p
                    for p in pods
                    if p.metadata.deletion_timestamp is None
                    and p.status is not None
                    and p.status.phase == "Running"
                }
                for name, pod in live.items():
                    if name not in self.procs:
                        self._spawn(pod)
                for name, p in self.procs.items():
                    if name not in live:
                        self._kill(p)
            self._stop.wait(0.1)

    @property
    def max_replicas_seen(self) -> int:
        return max((n for _, n in self.replicas), default=0)

    def direction_changes(self) -> list[tuple[float, float]]:
        """(time of the action before, time of the action that turned) for every turn."""
        actions = []
        for (_, a), (t, b) in zip(self.replicas, self.replicas[1:], strict=False):
            actions.append((t, "up" if b > a else "down"))
        return [
            (actions[i - 1][0], actions[i][0])
            for i in range(1, len(actions))
            if actions[i][1] != actions[i - 1][1]
        ]


@dataclass
class World:
    engine: Engine
    emu: EmuThread
    home: Path
    env: dict[str, str]
    api: Any
    metrics_port: int
    operator_log: Path

    @property
    def core(self) -> Any:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        return kubernetes.client.AppsV1Api(self.api)

    @property
    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self.api)

    def kubectl(self, *args: str) -> str:
        r = subprocess.run(
            ["kubectl", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {r.stderr}")
        return r.stdout

    def pool(self, name: str) -> Any:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "workerpools", name)

    def create_pool(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "workerpools", body)

    def events(self, name: str) -> list[Any]:
        items = self.core.list_namespaced_event(NS).items
        return [e for e in items if e.involved_object.name == name]

    @contextlib.contextmanager
    def pod_runner(self, pool: str) -> Iterator[PodRunner]:
        runner = PodRunner(core=self.core, apps=self.apps, pool=pool, log_dir=self.home)
        runner.start()
        try:
            yield runner
        finally:
            runner.stop()


@contextlib.contextmanager
def autoscale_world(
    engine: Engine, *, ready_delay: float = 1.0, poll_seconds: float = 2.0
) -> Iterator[World]:
    home = Path(tempfile.mkdtemp(prefix="hewer-e2e-autoscale-"))
    home.chmod(0o755)
    with EmuThread(ready_delay=ready_delay) as emu:
        kubeconfig = emu.kubeconfig(str(home / "kubeconfig"))
        env = {**_clean_environ(), "KUBECONFIG": kubeconfig, "HOME": str(home)}
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration
        )
        api = kubernetes.client.ApiClient(configuration)
        metrics_port = free_port()
        world = World(engine, emu, home, env, api, metrics_port, home / "operator.log")
        world.kubectl("apply", "-f", f"{CRDS}/")
        world.kubectl(
            "wait", "--for=condition=established", "--timeout=30s", "crd/workerpools.hewer.dev"
        )
        operator_env = {
            **env,
            "HEWER_ENGINE_URL": engine.server_url,
            "HEWER_ENGINE_TOKEN": engine.token,
            "HEWER_OPERATOR_RESYNC_SECONDS": "2",
            "HEWER_OPERATOR_RETRY_SECONDS": "0.5",
            "HEWER_OPERATOR_RETRY_MAX_SECONDS": "2",
            "HEWER_OPERATOR_AUTOSCALE_POLL_SECONDS": str(poll_seconds),
            "HEWER_OPERATOR_METRICS_PORT": str(metrics_port),
        }
        with world.operator_log.open("wb") as log:
            proc = subprocess.Popen(
                [*_hewer_command(), "operator", "--namespace", NS],
                env=operator_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield world
        finally:
            _stop_process(proc, grace=15.0)
            output = world.operator_log.read_text(errors="replace")
            shutil.rmtree(home, ignore_errors=True)
            assert "Traceback" not in output, output[-8000:]
