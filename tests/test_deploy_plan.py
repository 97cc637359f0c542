"""deploy.plan: placement, per-host cluster files, validation (pure, no ssh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from common.config import parse_cluster
from deploy.cli import parse_args
from deploy.errors import DeployError
from deploy.hosts import Host
from deploy.images import build_context_tar
from deploy.plan import (
    COLLECTOR,
    Service,
    check_compose,
    make_plan,
    manifest,
    parse_assignments,
    project_name,
    render_cluster,
    render_env,
    services_of_cluster,
)
from deploy.remote import snapshot_files
from deploy.ssh import parse_ports

REPO = Path(__file__).resolve().parents[1]
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
COMPOSE = yaml.safe_load((REPO / "compose.yml").read_text())
HOSTS = [
    Host("host-0", "203.0.113.10", "10.0.0.10"),
    Host("host-1", "203.0.113.11", "10.0.0.11"),
]
SERVICES = services_of_cluster(CLUSTER)


def placement(plan) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    return {hp.name: list(hp.services) for hp in plan.hosts}


def test_services_come_from_the_cluster_file_with_their_ports() -> None:
    assert SERVICES[0] == Service(COLLECTOR, 50050)
    assert [s.name for s in SERVICES[1:]] == ["n1", "n2", "n3", "n4", "n5"]
    assert [s.port for s in SERVICES[1:]] == [50051, 50052, 50053, 50054, 50055]


def test_default_placement_is_collector_first_host_and_nodes_round_robin() -> None:
    plan = make_plan(HOSTS, SERVICES)
    assert placement(plan) == {
        "host-0": ["collector", "n1", "n3", "n5"],
        "host-1": ["n2", "n4"],
    }
    assert plan.collector_host.name == "host-0"
    assert [hp.project for hp in plan.hosts] == ["chandy-lamport-host-0", "chandy-lamport-host-1"]


def test_assignments_override_single_services_and_keep_the_others() -> None:
    assign = parse_assignments(["n1=host-1,n2=host-0", "collector=host-1"])
    plan = make_plan(HOSTS, SERVICES, assign)
    assert placement(plan) == {
        "host-0": ["n2", "n3", "n5"],
        "host-1": ["collector", "n1", "n4"],
    }


def test_more_hosts_than_services_leaves_hosts_empty() -> None:
    hosts = [Host(f"h{i}", f"203.0.113.{i}", f"10.0.0.{i}") for i in range(1, 8)]
    plan = make_plan(hosts, SERVICES)
    assert [len(hp.services) for hp in plan.hosts] == [2, 1, 1, 1, 1, 0, 0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["n1"], "expected SERVICE=HOST"),
        (["=host-0"], "expected SERVICE=HOST"),
        (["n1=host-0", "n1=host-1"], "assigned twice"),
    ],
)
def test_bad_assign_syntax_is_refused(values: list[str], message: str) -> None:
    with pytest.raises(DeployError, match=message):
        parse_assignments(values)


def test_assign_to_unknown_host_or_service_names_the_known_ones() -> None:
    with pytest.raises(DeployError, match=r"no host 'host-9'.*host-0, host-1"):
        make_plan(HOSTS, SERVICES, {"n1": "host-9"})
    with pytest.raises(DeployError, match=r"no service 'n9'.*collector, n1"):
        make_plan(HOSTS, SERVICES, {"n9": "host-0"})


def test_each_host_reaches_local_services_by_name_and_remote_ones_by_private_ip() -> None:
    plan = make_plan(HOSTS, SERVICES)
    on_0 = yaml.safe_load(render_cluster(CLUSTER, plan, "host-0"))
    on_1 = yaml.safe_load(render_cluster(CLUSTER, plan, "host-1"))
    assert on_0["collector"] == "collector:50050"
    assert on_1["collector"] == "10.0.0.10:50050"
    assert {n["id"]: n["address"] for n in on_0["nodes"]} == {
        "n1": "n1:50051",
        "n2": "10.0.0.11:50052",
        "n3": "n3:50053",
        "n4": "10.0.0.11:50054",
        "n5": "n5:50055",
    }
    assert {n["id"]: n["address"] for n in on_1["nodes"]} == {
        "n1": "10.0.0.10:50051",
        "n2": "n2:50052",
        "n3": "10.0.0.10:50053",
        "n4": "n4:50054",
        "n5": "10.0.0.10:50055",
    }


def test_rendering_keeps_everything_but_addresses() -> None:
    plan = make_plan(HOSTS, SERVICES)
    rendered = yaml.safe_load(render_cluster(CLUSTER, plan, "host-1"))
    for key in ("topology", "snapshot_timeout", "workload"):
        assert rendered[key] == CLUSTER[key]
    assert [(n["id"], n["balance"]) for n in rendered["nodes"]] == [
        (n["id"], n["balance"]) for n in CLUSTER["nodes"]
    ]
    config = parse_cluster(rendered, "rendered", {})
    assert config.channels == parse_cluster(CLUSTER, "original", {}).channels


def test_env_file_publishes_on_the_private_address_with_the_host_project() -> None:
    plan = make_plan(HOSTS, SERVICES)
    env = render_env(plan, plan.hosts[1], "chandy-lamport:latest")
    assert "COMPOSE_PROJECT_NAME=chandy-lamport-host-1\n" in env
    assert f"PUBLISH_ADDRESS={plan.hosts[1].host.private_ip}\n" in env  # never 0.0.0.0
    assert "CL_IMAGE=chandy-lamport:latest\n" in env
    # exactly this host's services, each at the port the other hosts dial
    published = sorted(line for line in env.splitlines() if line.startswith("PUBLISH_PORT_"))
    expected = sorted(
        f"PUBLISH_PORT_{service.upper()}={plan.port_of(service)}"
        for service in plan.hosts[1].services
    )
    assert published == expected and expected


def test_manifest_records_placement_and_projects() -> None:
    plan = make_plan(HOSTS, SERVICES, {"collector": "host-1"})
    document = json.loads(json.dumps(manifest(plan, "img:1")))
    assert document["collector_host"] == "host-1"
    assert document["hosts"][1]["services"] == ["collector", "n2", "n4"]
    assert document["hosts"][0]["project"] == "chandy-lamport-host-0"
    assert document["image"] == "img:1"


def test_project_names_are_valid_for_both_compose_versions() -> None:
    assert project_name("Chandy-Lamport", "Host 0.eu") == "chandy-lamport-host-0-eu"
    with pytest.raises(DeployError, match="clashing"):
        make_plan(
            [Host("a.b", "203.0.113.1", "10.0.0.1"), Host("a-b", "203.0.113.2", "10.0.0.2")],
            SERVICES,
        )


def test_the_repository_compose_file_matches_its_cluster_file() -> None:
    check_compose(COMPOSE, SERVICES, "compose.yml")


def test_compose_without_a_cluster_service_or_its_port_is_refused() -> None:
    broken = yaml.safe_load((REPO / "compose.yml").read_text())
    del broken["services"]["n5"]
    with pytest.raises(DeployError, match="no service 'n5'"):
        check_compose(broken, SERVICES)
    broken = yaml.safe_load((REPO / "compose.yml").read_text())
    broken["services"]["n2"]["ports"] = ["127.0.0.1:6000:50052"]
    with pytest.raises(DeployError, match="does not publish port 50052"):
        check_compose(broken, SERVICES)


def test_an_unusable_cluster_file_is_refused_before_anything_is_shipped() -> None:
    bad = dict(CLUSTER, nodes=[{"id": "n1", "address": "n1", "balance": 1}])
    with pytest.raises(DeployError, match="host:port"):
        services_of_cluster(bad)


def test_ssh_ports_default_and_per_host() -> None:
    assert parse_ports([]) == (22, {})
    assert parse_ports(["2222", "host-1=2201"]) == (2222, {"host-1": 2201})
    with pytest.raises(DeployError, match="PORT or HOST=PORT"):
        parse_ports(["host-1=ssh"])


def test_fetch_keeps_only_top_level_json_files(tmp_path: Path) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in [
            ("./s1.json", b"{}"),
            ("./latest.json", b"{}"),
            ("./.tmp-x.json", b"{"),
            ("./.pending/s2/n1.json", b"{}"),
            ("./../evil.json", b"{}"),
            ("./notes.txt", b"x"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert sorted(snapshot_files(buffer.getvalue())) == ["latest.json", "s1.json"]


def test_fetch_follows_a_hard_link_between_snapshot_files_only(tmp_path: Path) -> None:
    import io
    import tarfile

    (tmp_path / "s1.json").write_text('{"snapshot_id": "s1"}')
    (tmp_path / "latest.json").hardlink_to(tmp_path / "s1.json")  # as the collector writes it
    (tmp_path / "secret").write_text("x")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(tmp_path, arcname=".")
        link = tarfile.TarInfo("./evil.json")  # a link to a file that is not a snapshot
        link.type, link.linkname = tarfile.LNKTYPE, "./secret"
        archive.addfile(link)
    files = snapshot_files(buffer.getvalue())
    assert files == {"latest.json": b'{"snapshot_id": "s1"}', "s1.json": b'{"snapshot_id": "s1"}'}


def test_build_context_has_the_dockerfile_and_packages_but_no_caches() -> None:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(build_context_tar(REPO)), mode="r:gz") as archive:
        names = archive.getnames()
    assert "Dockerfile" in names and "pyproject.toml" in names
    assert any(name.startswith("node/") for name in names)
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_snapshot_passes_initiator_options_on_in_order_and_others_refuse_them() -> None:
    args = parse_args(
        ["snapshot", "--snapshot-id", "s1", "--hosts", "h.json", "--node", "n2", "--json"]
    )
    assert args.initiator_args == ["--snapshot-id", "s1", "--node", "n2", "--json"]
    assert args.state_file == Path("h.json")
    assert parse_args(["snapshot", "--", "--show", "latest"]).initiator_args == ["--show", "latest"]
    assert parse_args(["snapshot"]).initiator_args == []
    with pytest.raises(SystemExit):
        parse_args(["status", "--json"])
