"""The README's "Scaling out" with Ray's default, token authentication (tests/conftest.py
``token_cluster``): a grid joins a head started with ``ray start`` through ``auto`` and through
``HOST:PORT``, a machine without the token is refused in one line, and a second node joins with
the head's token. Drivers and nodes are processes of their own, as a user's would be: Ray fixes
its authentication mode per process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

# one xdist worker runs every test that starts a Ray cluster: one cluster at a time on a small machine
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

# one dense model and one cell, on the head's one CPU
TINY = ["--archs", "fpn", "--plugins", "l1", "--datasets", "synthetic", "--sparsities", "0.5", "--encoder",
        "resnet18", "--image-size", "64", "--limit", "16", "--epochs", "1", "--batch-size", "2",
        "--steps-per-epoch", "1", "--threads", "1", "--device", "cpu", "--no-progress"]
QUICK_REFUSAL = {"RAY_gcs_server_port_wait_time_s": "5"}  # Ray's retries of a refused connection: 5 s, not 20


def compare(cluster, out: Path, address: str, env: dict[str, str] | None = None):
    """``toolkit compare`` of one tiny cell, as a user runs it in a shell on a machine (``env``)."""
    config = out.parent / "grid.toml"
    config.write_text(tomli_w.dumps({"examples": 0, "run": {"latency_runs": 2}}))
    return cluster.run("toolkit", "compare", "--config", str(config), *TINY, "--executor", "ray",
                       "--ray-address", address, "--out", str(out), env=env)


def the_row(out: Path) -> dict:
    (row,) = map(json.loads, (out / "results.jsonl").read_text().splitlines())
    return row


def alive_nodes(cluster, env: dict[str, str]) -> tuple[int, float]:
    """How many nodes the cluster has and how many CPUs, asked by a driver of its own."""
    asked = cluster.run("python", "-c", "import json, ray; ray.init(address='auto', logging_level='ERROR'); "
                        "print(json.dumps([sum(n['Alive'] for n in ray.nodes()), ray.cluster_resources()['CPU']]))",
                        env=env)
    assert asked.returncode == 0, asked.stderr[-2000:]
    nodes, cpus = json.loads(asked.stdout.splitlines()[-1])
    return nodes, cpus


def test_head_has_authentication_on_and_a_grid_joins_with_auto(tmp_path, token_cluster):
    assert "Token authentication is enabled for this Ray cluster" in token_cluster.log(token_cluster.head)
    done = compare(token_cluster, tmp_path / "run", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    row = the_row(tmp_path / "run")
    assert row["status"] == "ok" and row["executor"] == "ray" and row["attempts"] == 1, row.get("error")
    assert row["reached"] == pytest.approx(0.5, abs=0.01)


def test_host_port_joins_with_this_machines_token_and_without_it_is_one_line(tmp_path, token_cluster):
    done = compare(token_cluster, tmp_path / "run", token_cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    row = the_row(tmp_path / "run")
    assert row["status"] == "ok" and row["reached"] == pytest.approx(0.5, abs=0.01), row.get("error")

    # A machine without the head's token: refused before any work, in one line naming the fix.
    stranger = {**token_cluster.machine("stranger", token=False), **QUICK_REFUSAL}
    refused = compare(token_cluster, tmp_path / "refused", token_cluster.address, env=stranger)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert last == (f"toolkit compare: error: the Ray cluster at {token_cluster.address} wants its authentication "
                    "token: copy the head's ~/.ray/auth_token to ~/.ray/auth_token here (or set RAY_AUTH_TOKEN to it) "
                    "and leave RAY_AUTH_MODE unset or 'token'")
    assert not (tmp_path / "refused" / "results.jsonl").exists()


def test_second_node_joins_with_the_heads_token(token_cluster):
    # The README's steps on another machine: the head's token in ~/.ray/auth_token, RAY_AUTH_MODE=token.
    node = token_cluster.machine("node", token=True)
    without_mode = token_cluster.ray_start("no-mode", "--address", token_cluster.address, env={**node, **QUICK_REFUSAL})
    assert without_mode.returncode not in (None, 0), "ray start --address sends no token unless RAY_AUTH_MODE=token"
    assert "Authentication token is missing or incorrect" in token_cluster.log(without_mode)

    joined = token_cluster.ray_start("node", "--address", token_cluster.address,
                                     env={**node, "RAY_AUTH_MODE": "token"}, tries=2)
    try:
        assert joined.poll() is None, token_cluster.log(joined)
        assert alive_nodes(token_cluster, token_cluster.env) == (2, 2.0), "the head's one CPU and the node's"
    finally:
        token_cluster.stop(joined)
