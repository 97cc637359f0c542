"""cl-certs: the CA, identity certificates, idempotent `ensure`, bring-your-own CA."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from certs import authority
from certs.__main__ import main
from certs.identity import Identity, IdentityError, collector, identity_from_uris, node, operator
from certs.store import CertDir, CertStoreError, cluster_identities, read_cert

NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def _cluster_file(tmp_path: Path, ids: tuple[str, ...] = ("n1", "n2", "n3")) -> Path:
    raw = {
        "nodes": [
            {"id": n, "address": f"127.0.0.1:{7001 + i}", "balance": 10} for i, n in enumerate(ids)
        ],
        "collector": "127.0.0.1:7000",
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_identity_names_and_validation() -> None:
    assert node("n1").uri == "urn:chandy-lamport:node:n1"
    assert node("N_1").dns_name == "n_1.node.chandy-lamport"
    assert collector().directory == "collector"
    assert operator("alice").directory == "operator-alice"
    with pytest.raises(IdentityError, match="unknown role"):
        Identity("root", "x")
    with pytest.raises(IdentityError, match="not a valid node name"):
        node("n1:evil")
    with pytest.raises(IdentityError, match="collector's name"):
        Identity("collector", "n1")
    # Exactly one cluster URI: a certificate claiming two identities names none.
    assert identity_from_uris(["urn:chandy-lamport:node:n1"]) == node("n1")
    assert identity_from_uris(["urn:chandy-lamport:node:n1", "urn:chandy-lamport:node:n2"]) is None
    assert identity_from_uris(["urn:chandy-lamport:node:bad name"]) is None
    assert identity_from_uris(["https://example.com"]) is None


def test_issued_certificate_carries_one_identity_and_is_signed_by_the_ca() -> None:
    ca = authority.make_ca(NOW)
    issued = authority.issue(ca, node("n2"), NOW, days=10)
    cert = issued.cert
    assert authority.identity_of(cert) == node("n2")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n2.node.chandy-lamport"]
    assert authority.signed_by(cert, ca.cert)
    assert not authority.signed_by(cert, authority.make_ca(NOW).cert)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=10)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.SERVER_AUTH in usage
    op = authority.issue(ca, operator("bob"), NOW).cert
    op_usage = op.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(op_usage) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    # Never valid beyond the CA.
    short_ca = authority.make_ca(NOW, days=2)
    assert authority.issue(short_ca, node("n1"), NOW).cert.not_valid_after_utc == (
        short_ca.cert.not_valid_after_utc
    )


def test_ensure_creates_everything_once_and_keys_are_private(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    store = CertDir(certs)
    identities = cluster_identities(["n1", "n2"])
    actions = store.ensure(identities, NOW)
    assert [a.what for a in actions] == ["created"] * 5
    for directory in ("node-n1", "node-n2", "collector", "operator-admin"):
        key = certs / directory / "tls.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE((certs / directory / "tls.crt").stat().st_mode) == 0o644
        assert (certs / directory / "ca.crt").read_bytes() == (certs / "ca" / "ca.crt").read_bytes()
    assert stat.S_IMODE((certs / "ca" / "ca.key").stat().st_mode) == 0o600
    assert not list(certs.rglob(".tmp-*"))
    before = _snapshot(certs)
    again = store.ensure(identities, NOW + dt.timedelta(days=1))
    assert [a.what for a in again] == ["kept"] * 4
    assert _snapshot(certs) == before  # idempotent: not one byte changed


def test_ensure_reissues_missing_expiring_foreign_and_mismatched(tmp_path: Path) -> None:
    store = CertDir(tmp_path)
    store.ensure([node("n1"), node("n2"), node("n3"), node("n4")], NOW)
    (tmp_path / "node-n1" / "tls.crt").unlink()
    other = CertDir(tmp_path / "elsewhere")
    other.ensure([node("n2")], NOW)
    for name in ("tls.crt", "tls.key"):
        (tmp_path / "node-n2" / name).write_bytes((other.root / "node-n2" / name).read_bytes())
    (tmp_path / "node-n3" / "tls.key").write_bytes((tmp_path / "node-n4" / "tls.key").read_bytes())
    later = NOW + dt.timedelta(days=authority.LEAF_DAYS - 10)  # n4 expires within 30 days
    wanted = [node("n1"), node("n2"), node("n3"), node("n4")]
    actions = {a.identity.name: a.what for a in store.ensure(wanted, later) if a.identity}
    assert actions["n1"] == "created"
    assert "not issued by this CA" in actions["n2"]
    assert "key does not belong" in actions["n3"]
    assert "expires soon" in actions["n4"]
    for n in ("n1", "n2", "n3", "n4"):
        assert store.problem(node(n), store.load_ca(later).cert, later) is None


def test_bring_your_own_ca(tmp_path: Path) -> None:
    own = CertDir(tmp_path / "own")
    own.init_ca(NOW, "Example Corp CA", 100)
    store = CertDir(tmp_path / "cluster")
    store.import_ca(own.ca_cert_path, own.ca_key_path, NOW)
    store.ensure([node("n1")], NOW)
    cert = read_cert(store.root / "node-n1" / "tls.crt")
    assert authority.signed_by(cert, read_cert(own.ca_cert_path))
    leaf = CertDir(tmp_path / "leafy")
    with pytest.raises(CertStoreError, match="not a CA"):
        leaf.import_ca(store.root / "node-n1" / "tls.crt", store.root / "node-n1" / "tls.key", NOW)
    wrong = CertDir(tmp_path / "wrong")
    with pytest.raises(CertStoreError, match="does not belong"):
        wrong.import_ca(own.ca_cert_path, store.root / "node-n1" / "tls.key", NOW)
    with pytest.raises(CertStoreError, match="already exists"):
        store.init_ca(NOW, "again", 10)


def test_cli_ensure_issue_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = _cluster_file(tmp_path)
    assert main(["ensure", "--cluster", str(cluster), "--operator", "alice"]) == 0
    out = capsys.readouterr().out
    assert "node n3: created" in out and "operator alice: created" in out
    assert "PRIVATE KEY" not in out
    certs = tmp_path / "tls"
    assert (certs / "operator-alice" / "tls.key").exists()
    assert main(["ensure", "--cluster", str(cluster), "--operator", "alice", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    old = (certs / "node-n2" / "tls.crt").read_bytes()
    assert main(["issue", "--dir", str(certs), "--role", "node", "--name", "n2"]) == 0
    assert (certs / "node-n2" / "tls.crt").read_bytes() != old  # rotation: a new certificate
    capsys.readouterr()
    assert main(["list", "--dir", str(certs)]) == 0
    listing = capsys.readouterr().out
    assert "node-n1  node n1  valid until" in listing


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["issue", "--dir", str(tmp_path / "none"), "--role", "node", "--name", "n1"]) == 2
    assert "no CA here: run `cl-certs init" in capsys.readouterr().err
    assert main(["init", "--dir", str(tmp_path / "c")]) == 0
    assert main(["issue", "--dir", str(tmp_path / "c"), "--role", "node", "--name", "bad/x"]) == 2
    assert "not a valid node name" in capsys.readouterr().err
    clash = _cluster_file(tmp_path, ("n1", "N1"))
    assert main(["ensure", "--cluster", str(clash)]) == 2
    assert "differ only in letter case" in capsys.readouterr().err
    key = tmp_path / "garbage.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nsecretstuff\n-----END PRIVATE KEY-----\n")
    argv = ["init", "--dir", str(tmp_path / "d"), "--import-cert", str(key), "--import-key"]
    assert main([*argv, str(key)]) == 2
    assert "secretstuff" not in capsys.readouterr().err


def test_export_and_install_move_only_the_named_identities(tmp_path: Path) -> None:
    from certs.store import bundle, install_bundle

    source = CertDir(tmp_path / "src")
    source.ensure(cluster_identities(["n1", "n2"]), NOW)
    data = bundle(source, [node("n1"), operator()])
    # File names, not substrings: base64 key material contains "n2" by chance.
    assert b"ca.key" not in data and b'"node-n2/' not in data
    target = tmp_path / "host"
    (target / "node-n9").mkdir(parents=True)  # a service this host no longer runs
    assert install_bundle(target, data) == ["node-n1", "operator-admin"]
    assert sorted(p.name for p in target.iterdir()) == ["node-n1", "operator-admin"]
    key = target / "node-n1" / "tls.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() == (source.root / "node-n1" / "tls.key").read_bytes()
    with pytest.raises(CertStoreError, match="unexpected file '../evil/tls.key'"):
        install_bundle(target, b'{"schema_version": 1, "files": {"../evil/tls.key": "x"}}')
    with pytest.raises(CertStoreError, match="not a certificate bundle"):
        install_bundle(target, b"garbage")
