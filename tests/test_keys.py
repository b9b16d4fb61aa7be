"""API keys: shown once, stored as sha256 only, revocable; the gateway's in-memory key ring; the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from downsize.cli import app
from downsize.errors import DownsizeError
from downsize.server.keys import KEY_PREFIX, KeyRing, create_key, hash_key, list_keys, revoke_key
from downsize.store import ApiKey, Store


def test_create_stores_only_the_hash(tmp_store: Store, tmp_path: Path) -> None:
    k = create_key(tmp_store, "alice")
    assert k.secret.startswith(KEY_PREFIX) and len(k.secret) > 40
    assert k.secret not in repr(k)
    with tmp_store.session() as s:
        row = s.query(ApiKey).one()
        assert row.key_hash == hash_key(k.secret) and row.key_id == k.key_id and row.name == "alice"
    tmp_store.close()
    assert k.secret.encode() not in (tmp_path / "downsize.db").read_bytes()
    assert create_key(Store(f"sqlite:///{tmp_path / 'downsize.db'}"), "bob").secret != k.secret


def test_list_and_revoke(tmp_store: Store) -> None:
    a, b = create_key(tmp_store, "a"), create_key(tmp_store, "b")
    first = revoke_key(tmp_store, a.key_id)
    assert first.revoked_at is not None and not first.active
    assert revoke_key(tmp_store, a.key_id).revoked_at == first.revoked_at  # idempotent
    assert [(k.key_id, k.active) for k in list_keys(tmp_store)] == [(a.key_id, False), (b.key_id, True)]
    assert [k.key_id for k in list_keys(tmp_store, include_revoked=False)] == [b.key_id]
    with pytest.raises(DownsizeError, match=rf"no API key 'key_nope' \(keys: {a.key_id}, {b.key_id}\)"):
        revoke_key(tmp_store, "key_nope")


@pytest.mark.parametrize("name", ["", "   ", "x" * 256])
def test_bad_names(tmp_store: Store, name: str) -> None:
    with pytest.raises(DownsizeError, match="1-255 characters"):
        create_key(tmp_store, name)


def test_key_ring_sees_new_and_revoked_keys_after_reload(tmp_store: Store) -> None:
    ring = KeyRing(tmp_store, refresh_s=0.0)
    a = create_key(tmp_store, "a")
    assert ring.lookup(a.secret) is None and ring.stale()
    assert ring.may_fetch(a.secret) and ring.fetch(a.secret) == a.key_id  # an unknown key, looked up once
    assert ring.lookup(a.secret) == a.key_id
    assert ring.may_fetch("dsk_unknown") and ring.fetch("dsk_unknown") is None
    assert not ring.may_fetch("dsk_unknown")  # negative-cached for miss_ttl_s
    ring.reload()
    assert ring.lookup(a.secret) == a.key_id and len(ring) == 1
    assert ring.lookup(a.secret + "x") is None
    revoke_key(tmp_store, a.key_id)
    ring.reload()
    assert ring.lookup(a.secret) is None


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    cfg = tmp_path / "downsize.yaml"
    cfg.write_text("store: sqlite:///d.db\n")
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "ci bot", "--config", str(cfg)])
    assert made.exit_code == 0, made.output
    secret = re.search(r"dsk_\S+", made.stdout).group(0)  # type: ignore[union-attr]
    listed = runner.invoke(app, ["keys", "list", "--config", str(cfg)])
    assert "ci bot" in listed.stdout and "active" in listed.stdout and secret not in listed.stdout
    key_id = re.search(r"key_[0-9a-f]{8}", listed.stdout).group(0)  # type: ignore[union-attr]
    revoked = runner.invoke(app, ["keys", "revoke", key_id, "--config", str(cfg)])
    assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.stdout
    bad = runner.invoke(app, ["keys", "revoke", "key_00000000", "--config", str(cfg)])
    assert bad.exit_code == 1 and "no API key" in bad.output


def test_key_ring_limits_store_lookups(tmp_store: Store) -> None:
    ring = KeyRing(tmp_store, max_lookups_per_s=3)
    assert [ring.may_fetch(f"dsk_{i}") for i in range(5)] == [True, True, True, False, False]
