"""Session-wide test settings, and the fixtures of the executor tests."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core box, two threads per test run up to 10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- a slow test plugin and a two-node Ray cluster, for the executor tests ------------------
HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def slow_plugin_dir(tmp_path_factory) -> Path:
    """tests/slow_plugin pip-installed as a user would, into a folder of its own: child
    processes and Ray workers find it through PYTHONPATH, where a fixture's registration does not reach."""
    from plugin_helpers import pip_install

    target = tmp_path_factory.mktemp("slow-site")
    pip_install(HERE / "slow_plugin", target)
    return target


@pytest.fixture
def slow_plugin(slow_plugin_dir, monkeypatch):
    """The slow plugin on this process's path (spawned children inherit it) and PYTHONPATH."""
    from toolkit.plugins import reset_registry

    monkeypatch.syspath_prepend(str(slow_plugin_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(slow_plugin_dir), os.environ.get("PYTHONPATH")])))
    reset_registry()
    yield slow_plugin_dir
    sys.modules.pop("toolkit_slow_plugin", None)
    reset_registry()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster(slow_plugin_dir):
    """Two Ray nodes of one CPU each on this machine, started as a user would (``ray start``);
    yields the head's address. Every process they started is killed afterwards, found by
    process group and by the cluster's own folder (never by name: other Ray clusters may run here)."""
    # Ray reads its authentication mode once, at import: the same one here and in the cluster, whatever
    # ~/.ray holds (the cluster listens for one test session only). These tests are about the executor;
    # Ray's default, token authentication, is tested with drivers of their own (token_cluster below).
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    pytest.importorskip("ray", reason="the Ray tests need ray (pip install 'toolkit[ray]'; the test extra has it)")
    folder = Path(tempfile.mkdtemp(prefix="tkray-"))  # short: Ray's socket paths must stay under 108 characters
    (folder / "scratch").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(slow_plugin_dir), os.environ.get("PYTHONPATH")])),
           "TMPDIR": str(folder / "scratch"), "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    node = ["--num-cpus", "1", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
            "--object-store-memory", str(300 * 2**20)]
    started = []

    def start(name: str, nodes: int, *args: str) -> None:
        """``ray start`` a node and wait for it; again (twice at most) when ``ray start`` gives up:
        it allows a raylet 30 s to register, which a loaded 2-core machine can exceed."""
        for attempt in range(3):
            log = (folder / f"{name}-{attempt}.log").open("w")
            started.append(subprocess.Popen([ray_cli, "start", *args, *node], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True))
            try:
                _wait_for_nodes(f"127.0.0.1:{port}", nodes, folder, started[-1])
                return
            except _StartFailed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(started[-1].pid, signal.SIGKILL)  # what the failed start left running
                if attempt == 2:
                    raise

    try:
        start("head", 1, "--head", "--port", str(port), "--temp-dir", str(folder), "--include-dashboard", "false",
              "--dashboard-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()))
        start("worker", 2, "--address", f"127.0.0.1:{port}", "--dashboard-agent-listen-port", str(_free_port()))
        yield f"127.0.0.1:{port}"
    finally:
        for process in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _kill_processes_mentioning(str(folder))
        shutil.rmtree(folder, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


class _StartFailed(RuntimeError):
    """``ray start`` exited with an error before its node joined."""


def _wait_for_nodes(address: str, n: int, folder: Path, starter: subprocess.Popen, timeout: float = 120) -> None:
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if starter.poll():
            raise _StartFailed(f"ray start exited with {starter.returncode}")
        with contextlib.suppress(OSError):
            host, port = address.split(":")
            socket.create_connection((host, int(port)), timeout=1).close()
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            try:
                if sum(node["Alive"] for node in ray.nodes()) >= n:
                    return
            finally:
                ray.shutdown()
        time.sleep(1)
    logs = "\n".join(p.read_text()[-2000:] for p in folder.glob("*.log"))
    raise RuntimeError(f"the Ray test cluster did not reach {n} node(s) in {timeout:g} s:\n{logs}")


def _kill_processes_mentioning(text: str) -> None:
    """Ray workers that outlived their raylet: their command line names the cluster's folder."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)


# -- a Ray head with Ray's default authentication, for tests/test_ray_auth.py --------------------
@dataclasses.dataclass
class TokenCluster:
    """A head started as the README says (``ray get-auth-token --generate``, ``ray start --head``) with
    ``RAY_AUTH_MODE`` unset, so Ray turns token authentication on. ``HOME`` and Ray's temporary folder
    are the cluster's own: its token is not the user's, and ``auto`` finds this cluster, no other."""

    folder: Path
    env: dict[str, str]  # a shell on the head node
    address: str = ""
    head: subprocess.Popen | None = None
    started: list[subprocess.Popen] = dataclasses.field(default_factory=list)
    logs: dict[int, Path] = dataclasses.field(default_factory=dict)  # pid -> what its ray start printed

    def machine(self, name: str, token: bool) -> dict[str, str]:
        """A shell on another machine: a home of its own, holding the head's token if ``token``
        (copied as the README says)."""
        home = self.folder / name
        (home / ".ray").mkdir(parents=True, exist_ok=True)
        if token:
            shutil.copy(self.folder / "head" / ".ray" / "auth_token", home / ".ray" / "auth_token")
        return {**self.env, "HOME": str(home)}

    def ray_start(self, name: str, *args: str, env: dict[str, str], tries: int = 1) -> subprocess.Popen:
        """``ray start ... --block`` on this machine, waiting until it says the node runs or exits;
        again on failure up to ``tries`` times (a loaded 2-core machine can exceed Ray's 30 s to register)."""
        command = [str(Path(sys.executable).with_name("ray")), "start", *args, "--block", "--num-cpus", "1",
                   "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--object-store-memory",
                   str(300 * 2**20), "--dashboard-agent-listen-port", str(_free_port())]
        for attempt in range(tries):
            log = self.folder / f"{name}-{attempt}.log"
            with log.open("w") as out:
                self.started.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                     start_new_session=True))
            self.logs[self.started[-1].pid] = log
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and self.started[-1].poll() is None:
                if "Ray runtime started" in log.read_text():
                    return self.started[-1]
                time.sleep(0.5)
            self.stop(self.started[-1])
        return self.started[-1]

    def log(self, process: subprocess.Popen) -> str:
        """What ``ray start`` printed."""
        return self.logs[process.pid].read_text()

    def stop(self, process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def run(self, *command: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """A command of the venv (``toolkit``, ``python``) in a shell of this cluster."""
        return subprocess.run([str(Path(sys.executable).with_name(command[0])), *command[1:]], env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def token_cluster():
    """One head for the module; what a test starts beside it, it stops, and this stops the rest:
    every process started here, by process group and by the cluster's folder (never by name)."""
    pytest.importorskip("ray", reason="the Ray tests need ray (pip install 'toolkit[ray]'; the test extra has it)")
    folder = Path(tempfile.mkdtemp(prefix="tkauth-"))  # short: Ray's socket paths must stay under 108 characters
    (folder / "head").mkdir()
    (folder / "scratch").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    env.update(HOME=str(folder / "head"), RAY_TMPDIR=str(folder), TMPDIR=str(folder / "scratch"),
               RAY_USAGE_STATS_ENABLED="0")
    cluster = TokenCluster(folder, env)
    port = _free_port()
    try:
        made = cluster.run("ray", "get-auth-token", "--generate")
        assert made.returncode == 0 and (folder / "head/.ray/auth_token").exists(), made.stderr
        cluster.head = cluster.ray_start("head", "--head", "--port", str(port), "--include-dashboard", "false",
                                         "--dashboard-port", str(_free_port()), env=env, tries=3)
        assert cluster.head.poll() is None, cluster.log(cluster.head)
        cluster.address = f"127.0.0.1:{port}"
        yield cluster
    finally:
        for process in reversed(cluster.started):
            cluster.stop(process)
        _kill_processes_mentioning(str(folder))
        shutil.rmtree(folder, ignore_errors=True)
