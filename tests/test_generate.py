"""The N-node generator, and the checked-in files being its default output."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.config import parse_cluster
from common.generate import main, render_cluster, render_compose

REPO = Path(__file__).resolve().parents[1]


def test_checked_in_files_are_the_generators_default_output() -> None:
    assert (REPO / "cluster.yaml").read_text() == render_cluster(5)
    assert (REPO / "compose.yml").read_text() == render_compose(5)


def test_generated_cluster_and_compose_agree(tmp_path: Path) -> None:
    cluster_path, compose_path = tmp_path / "c.yaml", tmp_path / "compose.yml"
    code = main(
        [
            "--nodes",
            "7",
            "--topology",
            "ring",
            "--balance",
            "250",
            "--cluster-out",
            str(cluster_path),
            "--compose-out",
            str(compose_path),
        ]
    )
    assert code == 0
    config = parse_cluster(yaml.safe_load(cluster_path.read_text()), "c.yaml", {})
    assert config.node_ids == tuple(f"n{i}" for i in range(1, 8))
    assert config.expected_total == 7 * 250
    assert ("n7", "n1") in config.channels and len(config.channels) == 7
    compose = yaml.safe_load(compose_path.read_text())
    services = compose["services"]
    assert set(services) == {"certs", "collector", "initiator", *config.node_ids}
    for node in config.nodes:
        port = node.address.rsplit(":", 1)[1]
        service = services[node.id]
        assert service["environment"]["CL_NODE_ID"] == node.id
        assert service["environment"]["CL_PORT"] == port
        assert f"{node.id}-data:/data" in service["volumes"]
        assert "./c.yaml:/etc/chandy-lamport/cluster.yaml:ro" in service["volumes"]
    # Running the initiator never (re)starts a node stopped on purpose (README's
    # "n5 stopped -> aborted"); processes that refuse their config stop after 3 tries.
    assert "depends_on" not in services["initiator"]
    for name in ("collector", *config.node_ids):
        assert services[name]["restart"] == "on-failure:3"
    assert set(compose["volumes"]) == {
        "certs",
        "ca",
        "snapshots",
        *(f"{n}-data" for n in config.node_ids),
    }
    for node in config.node_ids:  # mutual TLS with its own certificate, least privilege
        service = services[node]
        assert service["environment"]["CL_TLS_DIR"] == f"/etc/chandy-lamport/certs/node-{node}"
        assert service["cap_drop"] == ["ALL"] and service["read_only"] is True
        assert service["security_opt"] == ["no-new-privileges:true"]
    assert "ca:/var/lib/chandy-lamport/ca" in services["certs"]["volumes"]
    assert not any("ca:" in v for s in services.values() if s is not services["certs"]
                   for v in s.get("volumes", []) if v.startswith("ca:"))  # fmt: skip


def test_out_of_range_node_count_is_refused(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "--nodes",
                "1",
                "--cluster-out",
                str(tmp_path / "a"),
                "--compose-out",
                str(tmp_path / "b"),
            ]
        )
    assert exit_.value.code == 2
    assert "--nodes must be between 2 and 40" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
