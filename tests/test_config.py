"""Cluster YAML loading: every bad input is one clear error naming file, field and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError, NodeSpec, Workload, env_key, load_cluster

GOOD = """\
nodes:
  - {id: n1, address: "n1:50051", balance: 100}
  - {id: n2, address: "n2:50051", balance: 50}
  - {id: n3, address: "n3:50051", balance: 0}
channels: [[n1, n2], [n2, n3], [n3, n1]]
collector: "collector:50060"
workload: {transfer_rate: 2.5, max_amount: 20}
snapshot_timeout: 10
link_delay_ms: 40
"""

NODES = """\
nodes:
  - {id: n1, address: "n1:50051", balance: 100}
  - {id: n2, address: "n2:50051", balance: 50}
collector: "c:1"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def test_good_cluster(tmp_path: Path) -> None:
    config = load_cluster(write(tmp_path, GOOD), environ={})
    assert config.nodes == (
        NodeSpec("n1", "n1:50051", 100),
        NodeSpec("n2", "n2:50051", 50),
        NodeSpec("n3", "n3:50051", 0),
    )
    assert config.channels == (("n1", "n2"), ("n2", "n3"), ("n3", "n1"))
    assert config.collector_address == "collector:50060"
    assert config.workload == Workload(transfer_rate=2.5, max_amount=20)
    assert config.snapshot_timeout == 10.0
    assert config.link_delay == 0.04
    assert config.expected_total == 150
    assert config.incoming("n1") == ("n3",) and config.outgoing("n1") == ("n2",)
    assert config.node("n2").balance == 50
    assert config.source == str(tmp_path / "cluster.yaml")
    with pytest.raises(ConfigError, match="node 'n9' is not in the cluster"):
        config.node("n9")


def test_defaults_complete_topology(tmp_path: Path) -> None:
    config = load_cluster(write(tmp_path, NODES), environ={})
    assert config.channels == (("n1", "n2"), ("n2", "n1"))
    assert config.workload == Workload() and config.snapshot_timeout == 30.0
    assert config.link_delay == 0.0


@pytest.mark.parametrize("topology", ["complete", "ring", "star", "random"])
def test_named_topologies(tmp_path: Path, topology: str) -> None:
    config = load_cluster(write(tmp_path, NODES + f"topology: {topology}\n"), environ={})
    assert set(config.channels) <= {("n1", "n2"), ("n2", "n1")}
    assert len(config.channels) == 2


BAD = [
    # (replace GOOD's line containing `old` by `new`, or the whole text, expected message)
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "channels: [[n1, n2], [n2, n4], [n3, n1]]",
        "channels[1]: unknown node 'n4' (known: n1, n2, n3)",
    ),
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "channels: [[n1, n1], [n2, n3], [n3, n1]]",
        "channels[0]: channel from n1 to itself",
    ),
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "channels: [[n1, n2], [n1, n2], [n3, n1]]",
        "channels[1]: duplicate channel n1 -> n2",
    ),
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "channels: [[n1, n2], [n2, n3]]",
        "channels: markers cannot reach n1 from n2",
    ),
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "channels: [[n1, n2], [n2, n1], [n3, n1]]",
        "channels: markers cannot reach n3 from n1",
    ),
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "channels: [n1, n2]",
        "channels[0]: expected [from, to], got 'n1'",
    ),
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "channels: []",
        "channels: expected a non-empty list",
    ),
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "channels: [[n1, n2]]\ntopology: ring",
        "channels: give either `topology` or `channels`, not both",
    ),
    (
        "channels: [[n1, n2], [n2, n3], [n3, n1]]",
        "topology: mesh",
        "topology: 'mesh' is not one of complete, ring, star, random",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: n1, address: "n2:50051", balance: 50}',
        "nodes[1].id: duplicate node id 'n1'",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: 2x, address: "n2:50051", balance: 50}',
        "nodes[1].id: '2x' is not a valid node id",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: "n2\\n", address: "n2:1", balance: 5}',
        "nodes[1].id: 'n2\\n' is not a valid node id",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: n2, address: "n2:50051", balance: lots}',
        "nodes[1].balance: expected a non-negative integer, got 'lots'",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: n2, address: "n2:50051", balance: 5.5}',
        "nodes[1].balance: expected a non-negative integer, got 5.5",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: n2, address: "n2:50051", balance: -5}',
        "nodes[1].balance: expected a non-negative integer, got -5",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: n2, address: "n2:50051", balance: true}',
        "nodes[1].balance: expected a non-negative integer, got True",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: n2, address: "n2:50051"}',
        "nodes[1].balance: missing",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{address: "n2:50051", balance: 50}',
        "nodes[1].id: missing",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        "{id: n2, balance: 50}",
        "nodes[1].address: missing",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: n2, address: "n2", balance: 50}',
        "nodes[1].address: 'n2' is not host:port",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        '{id: n2, address: "n2:1", balance: 5, x: 1}',
        "nodes[1].x: unknown field",
    ),
    (
        '{id: n2, address: "n2:50051", balance: 50}',
        "just-a-string",
        "nodes[1]: expected a mapping with id, address and balance",
    ),
    ('collector: "collector:50060"', "", "collector: missing or not host:port: None"),
    ('collector: "collector:50060"', 'collector: "nowhere"', "collector: missing or not host:port"),
    (
        "workload: {transfer_rate: 2.5, max_amount: 20}",
        "workload: {rate: 2}",
        "workload.rate: unknown field",
    ),
    (
        "workload: {transfer_rate: 2.5, max_amount: 20}",
        "workload: {transfer_rate: fast}",
        "workload.transfer_rate: expected a non-negative number",
    ),
    (
        "workload: {transfer_rate: 2.5, max_amount: 20}",
        "workload: {max_amount: 0}",
        "workload.max_amount: expected a positive integer",
    ),
    (
        "workload: {transfer_rate: 2.5, max_amount: 20}",
        "workload: 5",
        "workload: expected a mapping",
    ),
    ("snapshot_timeout: 10", "snapshot_timeout: 0", "snapshot_timeout: expected a positive number"),
    ("snapshot_timeout: 10", "snapshot_timeout: 10\nreplicas: 3", "replicas: unknown field"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD)
def test_bad_cluster_gives_one_clear_error(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_cluster(path, environ={})
    error = str(info.value)
    assert error.startswith(f"{path}: "), error
    assert message in error, error
    assert "\n" not in error
    # pydantic validates; its own wording must not reach the user.
    assert "Value error" not in error and "validation error" not in error, error
    assert "pydantic" not in error, error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a mapping at the top level"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ('collector: "c:1"\n', "nodes: missing or empty"),
        ('nodes: []\ncollector: "c:1"\n', "nodes: missing or empty"),
        (NODES + "seed: abc\ntopology: random\n", "seed: expected an integer"),
    ],
)
def test_bad_documents(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_cluster(path, environ={})
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("nodes: [", "1:9", "expected the node content, but found '<stream end>'"),
        # A missing "}": found where the next entry starts, named with where it opened.
        (
            GOOD.replace("balance: 50}", "balance: 50"),
            "4:5",
            "expected ',' or '}', but got '{' (while parsing a flow mapping at 3:5)",
        ),
        ("nodes:\n  - a\n - b\n", "3:2", "expected <block end>"),
        ("a: 1\n\tb: 2\n", "2:1", "found character '\\t' that cannot start any token"),
    ],
)
def test_yaml_syntax_errors_name_file_line_and_column(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_cluster(path, environ={})
    error = str(info.value)
    assert error.startswith(f"{path}:{where}: not valid YAML: "), error
    assert problem in error, error
    assert "<unicode string>" not in error and "\n" not in error


def test_duplicate_addresses_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('address: "n2:50051"', 'address: "n1:50051"'))
    with pytest.raises(ConfigError) as info:
        load_cluster(path, environ={})
    assert str(info.value) == (
        f"{path}: nodes[1].address: 'n1:50051' is already the address of n1: "
        "two nodes cannot listen on one host:port"
    )
    # The same through the environment, and the collector on a node's address.
    with pytest.raises(ConfigError, match=r"nodes\[2\].address: 'n2:50051' is already"):
        load_cluster(write(tmp_path, GOOD), environ={"CL_NODE_N3_ADDRESS": "n2:50051"})
    with pytest.raises(ConfigError, match="collector: 'n3:50051' is already the address of n3"):
        load_cluster(write(tmp_path, GOOD), environ={"CL_COLLECTOR_ADDRESS": "n3:50051"})


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read cluster file"):
        load_cluster(tmp_path / "missing.yaml", environ={})


# ------------------------------------------------------------ environment


def test_env_key() -> None:
    assert env_key("n1", "ADDRESS") == "CL_NODE_N1_ADDRESS"
    assert env_key("node-a", "BALANCE") == "CL_NODE_NODE_A_BALANCE"


def test_environment_overrides(tmp_path: Path) -> None:
    config = load_cluster(
        write(tmp_path, GOOD),
        environ={
            "CL_NODE_N1_ADDRESS": "10.0.0.5:6000",
            "CL_NODE_N1_BALANCE": "999",
            "CL_COLLECTOR_ADDRESS": "10.0.0.9:7000",
            "CL_TOPOLOGY": "complete",  # replaces the file's `channels`
            "CL_TRANSFER_RATE": "0.5",
            "CL_MAX_AMOUNT": "3",
            "CL_SNAPSHOT_TIMEOUT": "2.5",
            "CL_LINK_DELAY_MS": "250",
        },
    )
    assert config.node("n1") == NodeSpec("n1", "10.0.0.5:6000", 999)
    assert config.node("n2") == NodeSpec("n2", "n2:50051", 50)
    assert config.collector_address == "10.0.0.9:7000"
    assert len(config.channels) == 6
    assert config.workload == Workload(transfer_rate=0.5, max_amount=3)
    assert config.snapshot_timeout == 2.5
    assert config.link_delay == 0.25
    assert config.expected_total == 999 + 50 + 0


@pytest.mark.parametrize("value", ["-1", "fast", "10001"])
def test_bad_link_delay_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_cluster(write(tmp_path, GOOD), environ={"CL_LINK_DELAY_MS": value})
    assert str(error.value) == (
        f"{tmp_path / 'cluster.yaml'}: link_delay_ms: "
        "expected a number of milliseconds between 0 and 10000 (from CL_LINK_DELAY_MS)"
    )


def test_environment_topology_ring(tmp_path: Path) -> None:
    config = load_cluster(write(tmp_path, GOOD), environ={"CL_TOPOLOGY": "ring"})
    assert config.channels == (("n1", "n2"), ("n2", "n3"), ("n3", "n1"))


def test_os_environ_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CL_TRANSFER_RATE", "7")
    assert load_cluster(write(tmp_path, GOOD)).workload.transfer_rate == 7.0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "CL_NODE_N1_ADDRESS",
            "no-port",
            "nodes[0].address: 'no-port' is not host:port (from CL_NODE_N1_ADDRESS)",
        ),
        ("CL_NODE_N1_ADDRESS", "host:1\n", "nodes[0].address"),
        (
            "CL_NODE_N1_BALANCE",
            "ten",
            "nodes[0].balance: expected a non-negative integer, got 'ten'"
            " (from CL_NODE_N1_BALANCE)",
        ),
        ("CL_NODE_N1_BALANCE", "-1", "nodes[0].balance: expected a non-negative integer"),
        ("CL_COLLECTOR_ADDRESS", "", "collector: missing or not host:port"),
        ("CL_TOPOLOGY", "hypercube", "topology: 'hypercube' is not one of"),
        ("CL_TRANSFER_RATE", "fast", "workload.transfer_rate: expected a non-negative number"),
        ("CL_TRANSFER_RATE", "-1", "workload.transfer_rate"),
        ("CL_MAX_AMOUNT", "1.5", "workload.max_amount: expected a positive integer"),
        ("CL_SNAPSHOT_TIMEOUT", "never", "snapshot_timeout: expected a positive number"),
    ],
)
def test_bad_environment_values_are_named(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as info:
        load_cluster(path, environ={variable: value})
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_address_port_must_be_listenable(tmp_path: Path) -> None:
    for port in ("0", "65536", "70000", "99999"):
        expected = f"nodes\\[0\\].address: 'n1:{port}': port {port} is out of range \\(1-65535\\)"
        with pytest.raises(ConfigError, match=expected):
            load_cluster(write(tmp_path, GOOD.replace("n1:50051", f"n1:{port}")), environ={})
    path = write(tmp_path, GOOD.replace("collector:50060", "collector:70000"))
    with pytest.raises(ConfigError, match=r"collector: 'collector:70000': port 70000 is out of"):
        load_cluster(path, environ={})


INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    ("balances", "field", "problem"),
    [
        ((INT64_MAX + 1, 0), "nodes[0].balance", "beyond int64"),
        ((INT64_MAX, 1), "nodes: the balances add up to", "beyond int64"),
    ],
)
def test_balances_beyond_int64_are_refused(
    tmp_path: Path, balances: tuple[int, int], field: str, problem: str
) -> None:
    text = (
        "nodes:\n"
        f'  - {{id: n1, address: "n1:1", balance: {balances[0]}}}\n'
        f'  - {{id: n2, address: "n2:1", balance: {balances[1]}}}\n'
        'collector: "c:1"\n'
    )
    with pytest.raises(ConfigError, match=problem) as caught:
        load_cluster(write(tmp_path, text), environ={})
    assert field in str(caught.value)
    # At the limit it loads: the total still fits.
    text = text.replace(str(balances[0]), str(INT64_MAX - balances[1]), 1)
    assert load_cluster(write(tmp_path, text), environ={}).expected_total == INT64_MAX


def test_max_amount_beyond_int64_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, NODES + f"workload: {{max_amount: {INT64_MAX + 1}}}\n")
    with pytest.raises(ConfigError, match="workload.max_amount"):
        load_cluster(path, environ={})
