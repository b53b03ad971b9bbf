"""keys.py: which names mark a secret, which values never are one."""

from __future__ import annotations

import pytest

from snapshot_agent.redact.keys import SecretKeys, is_benign_value, looks_secret

KEYS = SecretKeys()


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("DB_PASSWORD", "password"),
        ("--api-key", "api-key"),
        ("keyStorePassword", "password"),
        ("X-Auth-Token", "token"),
        ("IGGY_HTTP_JWT_ENCODING_SECRET", "secret"),
        ("encoding_secret", "secret"),
        ("aws_secret_access_key", "secret-key"),
        ("aws_access_key_id", "access-key"),
        ("accessKeyId", "access-key"),
        ("private_key", "private-key"),
        ("PGPASSWORD", "password"),
        ("MYSQL_PWD", "password"),
        ("passphrase", "password"),
        ("client_secret", "secret"),
        ("shared_secret", "shared-secret"),
        ("encryption_key", "encryption-key"),
        ("credentials", "credential"),
        ("Authorization", "auth"),
        ("basic_auth", "auth"),
        ("session_id", "session"),
        ("sessionId", "session"),
        ("cookie", "cookie"),
        ("apiKey", "api-key"),
        ("APIKey", "api-key"),
        ("password2", "password"),
        ("spring.datasource.password", "password"),
        ("password_hash", "password"),
    ],
)
def test_secret_names(name: str, label: str) -> None:
    assert KEYS.label(name) == label
    assert not KEYS.kind(name).weak


@pytest.mark.parametrize(
    "name", ["key", "client-key-data", "AccountKey", "kms_key_id", "session", "salt", "tls.key"]
)
def test_weak_names(name: str) -> None:
    kind = KEYS.kind(name)
    assert kind is not None and kind.weak


@pytest.mark.parametrize(
    "name",
    [
        "bypass",
        "monkey",
        "passthrough",
        "KeyringMode",
        "PassEnvironment",
        "keyboard",
        "tokenizer",
        "author",
        "authority",
        "sessions_dir",
        "public_key",
        "token_expiry",
        "access_token_expiry",
        "session_timeout",
        "password_min_length",
        "password_max_length",
        "token_ttl",
        "key_size",
        "secret_key_file",
        "password_path",
        "key_dir",
        "auth_enabled",
        "use_base64_secret",
        "jwt_algorithm",
        "auth_type",
        "key_count",
        "token_refresh_interval",
        "keepalive",
        "secretKeyRef",
        "secretName",
        "secret_name",
        "existingSecret",
        "max_tokens",
        "cookie_secure",
        "PasswordAuthentication",
        "host",
        "user",
    ],
)
def test_not_secret_names(name: str) -> None:
    assert KEYS.label(name) is None


def test_extra_keys_are_strong_words_and_whole_names() -> None:
    keys = SecretKeys(["iggy_root", "Passkey"])
    assert keys.label("IGGY_ROOT") == "iggy-root"
    assert keys.label("MY_IGGY_ROOT_VALUE") == "iggy-root"
    assert keys.label("PASSKEY") == "passkey"
    assert keys.label("iggy_rooted") is None
    assert {"iggy", "passkey"} <= set(keys.hints) or {"root", "passkey"} <= set(keys.hints)


def test_hints_cover_every_secret_word() -> None:
    for name in ("DB_PASSWORD", "pwd", "apikey", "creds", "Authorization", "SessionId", "salt"):
        assert any(h in name.lower() for h in KEYS.hints), name
    assert all(h == h.lower() and h for h in KEYS.hints)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "null",
        "~",
        "None",
        "true",
        "off",
        "42",
        "-1.5",
        "30m",
        "1h30m",
        "500ms",
        "5 s",
        "512MiB",
        "1 GB",
        "10KB",
        "0.8.0",
        "v1.2.3-rc1",
        "/etc/iggy/secret.key",
        "./certs/key.pem",
        "~/.ssh/id_ed25519",
        "file:///run/secrets/db",
        "${DB_PASSWORD}",
        "${DB_PASSWORD:?must be set}",
        "$DB_PASSWORD",
        "{{ .Values.password }}",
        "<secret>",
        "<your-token-here>",
        "****",
        "xxx",
        "[REDACTED:password]",
        "***",
        "ENC[AES256_GCM,data:abc,iv:def,tag:ghi,type:str]",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI4bV3AyAVHnyrvWdFrK9x user@host",
        "-----BEGIN CERTIFICATE-----",
    ],
)
def test_benign_values(value: str) -> None:
    assert is_benign_value(value)


@pytest.mark.parametrize(
    "value",
    [
        "hunter2",
        "changeme",  # a real (weak) password: hidden
        "password",
        "Sup3r secret pass",
        "${DB_PASSWORD:-hunter2}",  # a default value is a secret
        "1700000000000123",
        "/x9Kq2LmP0sW8vZ3kRy7Tq2LmP0sW8vZ",  # base64 starting with '/'
        "ghp_3X83RZJzzzzgEOzdmenCkhvMdgaKjIg8xNbe",
    ],
)
def test_secret_values_are_not_benign(value: str) -> None:
    assert not is_benign_value(value)


@pytest.mark.parametrize(
    "value",
    [
        "XEw/yy6yxz4Uk0yGfuBXunJJm/oSHoNrKsFXJu59awo=",
        "AKIAE9UVW53EFR4EDT2S",
        "d0c621de49f145fda9988c79fc35526f",
        "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo=",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlMTIz",
    ],
)
def test_weak_names_need_secret_looking_values(value: str) -> None:
    assert looks_secret(value)


@pytest.mark.parametrize(
    "value",
    [
        "app",
        "partition",
        "3f0e2d1c-9a8b-4c7d-8e6f-5a4b3c2d1e0f",
        "my_application_name_v2",
        "events.user.v2.created",
        "node-role.kubernetes.io/master",
        "aaaaaaaaaaaaaaaaaaaa",
    ],
)
def test_plain_values_do_not_look_secret(value: str) -> None:
    assert not looks_secret(value)
