"""Settings: TOML, then MIRROR_* overrides; every bad value names its key."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from mirror.config import ENV_KEYS, MAVEN_CENTRAL, Config, load_config, parse_duration, parse_size
from mirror.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "mirror.toml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("90m", timedelta(minutes=90)),
        ("72h", timedelta(hours=72)),
        ("3d", timedelta(days=3)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("500ms", timedelta(milliseconds=500)),
        ("2w", timedelta(weeks=2)),
        ("30", timedelta(seconds=30)),
        (45, timedelta(seconds=45)),
    ],
    ids=lambda value: str(value),
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["3 days", "-1d", "d3", "", "3x", "1h-", -5, True])
def test_parse_duration_rejects_with_key(text: object) -> None:
    with pytest.raises(ConfigError, match=r"quarantine\.default"):
        parse_duration(text, key="quarantine.default")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("500M", 500 * 1024**2), ("20G", 20 * 1024**3), ("1.5GiB", int(1.5 * 1024**3))],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_defaults_without_file_or_env() -> None:
    config = load_config(None, {})
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.quarantine.default == timedelta(days=3)
    assert config.quarantine.unknown == "quarantine"
    assert not config.npm.enabled
    assert not config.pypi.enabled
    assert config.maven.upstream == MAVEN_CENTRAL
    assert config.cache.metadata_ttl == timedelta(minutes=5)
    assert config.cache.stale_max == timedelta(days=7)
    assert config.state.redis_url is None
    assert config.workers >= 1


def test_shipped_config_file_loads() -> None:
    config = load_config(REPO_CONFIG, {})
    assert config.quarantine.default == timedelta(days=3)
    assert config.maven.enabled


def test_toml_then_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(
        """
listen = "0.0.0.0:9000"
[quarantine]
default = "7d"
[quarantine.npm]
age = "1d"
[[quarantine.rules]]
ecosystem = "npm"
package = "@ourcorp/*"
age = "0"
[npm]
upstream = "http://127.0.0.1:4873"
[admin]
tokens = { alice = "0123456789abcdef0123" }
""",
        encoding="utf-8",
    )
    config = load_config(
        path,
        {
            "MIRROR_QUARANTINE": "72h",
            "MIRROR_PYPI_UPSTREAM": "http://127.0.0.1:9999/simple",
            "MIRROR_ADMIN_TOKENS": "ci:abcdefghijklmnop1234,ops:qrstuvwxyz0123456789",
            "MIRROR_WORKERS": "3",
        },
    )
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert config.quarantine.default == timedelta(hours=72)
    assert config.quarantine.per_ecosystem == {"npm": timedelta(days=1)}
    assert config.quarantine.rules[0].package == "@ourcorp/*"
    assert config.quarantine.rules[0].age == timedelta(0)
    assert config.npm.upstream == "http://127.0.0.1:4873/"
    assert config.pypi.upstream == "http://127.0.0.1:9999/simple/"
    assert dict(config.admin.tokens) == {
        "ci": "abcdefghijklmnop1234",
        "ops": "qrstuvwxyz0123456789",
    }
    assert config.workers == 3


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"MIRROR_QUARANTINE": "soon"}, "quarantine.default"),
        ({"MIRROR_QUARANTINE": "9999999999d"}, "quarantine.default"),
        ({"MIRROR_CACHE_METADATA_TTL": "99999999999999"}, "cache.metadata_ttl"),
        ({"MIRROR_LISTEN": "8080"}, "listen"),
        ({"MIRROR_LISTEN": "host:99999"}, "listen"),
        ({"MIRROR_WORKERS": "0"}, "workers"),
        ({"MIRROR_WORKERS": "many"}, "workers"),
        ({"MIRROR_NPM_UPSTREAM": "ftp://example.com/"}, "npm.upstream"),
        ({"MIRROR_PUBLIC_URL": "not a url"}, "public_url"),
        ({"MIRROR_REDIS_URL": "http://127.0.0.1:6379"}, "state.redis_url"),
        ({"MIRROR_ADMIN_TOKENS": "alice"}, "admin.tokens"),
        ({"MIRROR_ADMIN_TOKENS": "alice:short"}, "admin.tokens.alice"),
        ({"MIRROR_QUARANTINE_UNKNOWN": "maybe"}, "quarantine.unknown"),
        ({"MIRROR_CACHE_MAX_BYTES": "lots"}, "cache.max_bytes"),
        ({"MIRROR_TRUSTED_PROXIES": "10.0.0.0/33"}, "trusted_proxies"),
        ({"MIRROR_TRUSTED_PROXIES": "proxy.local"}, "trusted_proxies"),
        ({"MIRROR_CACHE_REFRESH_INTERVAL": "often"}, "cache.refresh_interval"),
        ({"MIRROR_ADMIN_OPEN_IMPACT": "perhaps"}, "admin.open_impact"),
        ({"MIRROR_TLS_CERT": "/nonexistent/cert.pem"}, "tls.cert"),
        ({"MIRROR_UPSTREAM_READ_TIMEOUT": "0"}, "upstream.read_timeout"),
        ({"MIRROR_LOG_LEVEL": "chatty"}, "log_level"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else value,
)
def test_bad_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ)
    assert key in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('colour = "blue"', "colour"),
        ('[quarantine]\nnpm_age = "3d"', "quarantine.npm_age"),
        ('[[quarantine.rules]]\necosystem = "cargo"\npackage = "x"\nage = "1d"', "ecosystem"),
        ('[[quarantine.rules]]\necosystem = "npm"\npackage = "x"', "quarantine.rules[0].age"),
        ('[quarantine.pypi]\nage = "forever"', "quarantine.pypi.age"),
        ('[npm]\nupstreams = "http://127.0.0.1/"', "npm.upstreams"),
        ("listen = [", "not valid TOML"),
    ],
    ids=[
        "unknown-top",
        "unknown-nested",
        "bad-ecosystem",
        "missing-age",
        "bad-age",
        "typo",
        "toml",
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, {})


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tls.cert and tls.key"):
        load_config(None, {"MIRROR_TLS_CERT": str(cert)})


def test_ecosystem_can_be_switched_off() -> None:
    assert not load_config(None, {"MIRROR_MAVEN_UPSTREAM": "off"}).maven.enabled


@pytest.mark.parametrize(
    ("environ", "expected_upstream", "expected_auth"),
    [
        (
            {"MIRROR_NPM_UPSTREAM": "https://ci:p%40ss@npm.internal.example:8443/repo/"},
            "https://npm.internal.example:8443/repo/",
            "Basic Y2k6cEBzcw==",  # ci:p@ss
        ),
        (
            {
                "MIRROR_NPM_UPSTREAM": "https://npm.internal.example/",
                "MIRROR_NPM_UPSTREAM_AUTH": "bearer abc.def",
            },
            "https://npm.internal.example/",
            "Bearer abc.def",
        ),
        (
            {
                "MIRROR_NPM_UPSTREAM": "https://npm.internal.example/",
                "MIRROR_NPM_UPSTREAM_AUTH": "ci:secret",
            },
            "https://npm.internal.example/",
            "Basic Y2k6c2VjcmV0",
        ),
        ({"MIRROR_NPM_UPSTREAM": "https://npm.internal.example/"}, None, None),
    ],
)
def test_upstream_credentials(
    environ: dict[str, str], expected_upstream: str | None, expected_auth: str | None
) -> None:
    config = load_config(None, environ)
    if expected_upstream is not None:
        assert config.npm.upstream == expected_upstream
    assert config.npm.upstream_auth == expected_auth
    assert "secret" not in repr(config)
    assert "p%40ss" not in repr(config)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {
                "MIRROR_NPM_UPSTREAM": "https://u:p@npm.internal.example/",
                "MIRROR_NPM_UPSTREAM_AUTH": "Bearer x",
            },
            "npm.upstream carries credentials and npm.upstream_auth is set too",
        ),
        ({"MIRROR_NPM_UPSTREAM_AUTH": "just-a-token"}, "npm.upstream_auth: expected"),
        ({"MIRROR_MAVEN_UPSTREAM_AUTH": "Bearer a\nb"}, "maven.upstream_auth: control"),
    ],
)
def test_bad_upstream_credentials_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, environ)


def test_every_setting_is_documented() -> None:
    """README's settings table and config/mirror.toml name every MIRROR_* variable."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    shipped = (root / "config" / "mirror.toml").read_text(encoding="utf-8")
    assert [key for key in ENV_KEYS if key not in readme] == []
    assert [key for key in ENV_KEYS if key not in shipped] == []


# A valid value for each setting whose default-typed sample would not do (choices, URLs,
# files, tokens); every other setting gets one from its default's type.
_SAMPLES: dict[str, str] = {
    "listen": "127.0.0.2:9",
    "public_url": "https://mirror.example.com",
    "trusted_proxies": "10.9.0.0/16",
    "log_level": "debug",
    "takedowns.webhook": "http://127.0.0.1:9/hook",
    "quarantine.unknown": "allow",
    "state.redis_url": "redis://127.0.0.1:1/0",
    "admin.tokens": "ci:0123456789abcdef0123",
    "admin.read_tokens": "auditor:0123456789abcdef4567",
    "access.tokens": "team-a:0123456789abcdef0123",
    "feeds.sources": "/srv/osv/malicious",
}


def _sample(dotted: str, default: object) -> str:
    if dotted in _SAMPLES:
        return _SAMPLES[dotted]
    if dotted.endswith(".upstream"):
        return "http://127.0.0.1:1/up/"
    if dotted.endswith(".upstream_auth"):
        return "Bearer sample-token"
    if dotted.endswith(".file_hosts"):
        return "files.example.com"
    if isinstance(default, bool):
        return "false" if default else "true"
    if isinstance(default, timedelta) or dotted.endswith(".age"):
        return "17s"
    if isinstance(default, int):
        return "7"
    return "sample"


def _value(config: Config, dotted: str) -> object:
    if dotted == "listen":
        return (config.host, config.port)
    parts = dotted.split(".")
    if parts[0] == "quarantine" and parts[-1] == "age":  # quarantine.<ecosystem>.age
        return config.quarantine.per_ecosystem.get(parts[1])
    value: object = config
    for part in parts:
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("env_name", sorted(ENV_KEYS))
def test_each_variable_sets_its_own_setting(env_name: str, tmp_path: Path) -> None:
    """The variable names are derived from the schema: each must reach exactly the setting
    README says it sets, and no other."""
    dotted = ENV_KEYS[env_name]
    defaults = load_config(None, {})
    environ = {env_name: _sample(dotted, _value(defaults, dotted))}
    if dotted.startswith("tls."):
        for name in ("MIRROR_TLS_CERT", "MIRROR_TLS_KEY"):
            (tmp_path / name).write_text("x", encoding="utf-8")
            environ[name] = str(tmp_path / name)
    if dotted == "access.required":  # required needs a token to start with
        environ["MIRROR_ACCESS_TOKENS"] = _SAMPLES["access.tokens"]
    changed = load_config(None, environ)
    assert _value(changed, dotted) != _value(defaults, dotted)
    others = {key: value for key, value in ENV_KEYS.items() if value != dotted}
    differing = [
        key
        for key, other in others.items()
        if _value(changed, other) != _value(defaults, other)
        and not (dotted.startswith("tls.") and other.startswith("tls."))
        and not (dotted == "access.required" and other == "access.tokens")
    ]
    assert differing == []


def test_per_ecosystem_quarantine_reads_the_quarantine_table() -> None:
    config = load_config(None, {"MIRROR_PYPI_QUARANTINE": "5h"})
    assert config.quarantine.per_ecosystem == {"pypi": timedelta(hours=5)}


def test_the_documented_variables_are_the_ones_read() -> None:
    """A variable renamed in the schema would leave README's (and users') name unread."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(MIRROR_[A-Z_]+)`", readme, flags=re.MULTILINE)
    named = set(rows) | set(re.findall(r"\(`(MIRROR_[A-Z_]+)`", readme))
    assert len(rows) > 30
    assert sorted(named - set(ENV_KEYS) - {"MIRROR_CONFIG"}) == []


def test_the_shipped_file_states_the_defaults() -> None:
    """config/mirror.toml writes each default out; it must say what the schema does."""
    assert load_config(REPO_CONFIG, {}) == load_config(None, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('typo = "x"', "unknown setting(s): typo"),
        ('[cache]\nmetadata_tl = "5m"', "unknown setting(s): cache.metadata_tl"),
        ('[quarantine.npm]\nage = "1d"\nagee = "2d"', "unknown setting(s): quarantine.npm.agee"),
        ("[npm]\nname = 'pypi'", "unknown setting(s): npm.name"),
        ("cache = 3", "cache: expected a table"),
    ],
)
def test_keys_no_setting_declares_are_refused(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, {})


def test_read_tokens_and_required_access_are_read_from_the_environment() -> None:
    config = load_config(
        None,
        {
            "MIRROR_ACCESS_TOKENS": "team-a:aaaaaaaaaaaaaaaa1, ci:bbbbbbbbbbbbbbbb2",
            "MIRROR_ACCESS_REQUIRED": "true",
        },
    )
    assert dict(config.access.tokens) == {"team-a": "aaaaaaaaaaaaaaaa1", "ci": "bbbbbbbbbbbbbbbb2"}
    assert config.access.required is True
    assert load_config(None, {}).access.required is False


def test_a_short_read_token_is_refused_naming_the_setting_not_the_secret() -> None:
    with pytest.raises(ConfigError, match=r"access\.tokens\.team-a") as caught:
        load_config(None, {"MIRROR_ACCESS_TOKENS": "team-a:short-secret"})
    assert "short-secret" not in str(caught.value)


def test_feeds_are_directories_or_http_urls() -> None:
    config = load_config(None, {"MIRROR_FEEDS": "/srv/osv, https://feeds.example.com/all.zip"})
    assert config.feeds.sources == ("/srv/osv", "https://feeds.example.com/all.zip")
    assert config.feeds.interval == timedelta(hours=1)
    with pytest.raises(ConfigError, match=r"feeds\.sources"):
        load_config(None, {"MIRROR_FEEDS": "ftp://feeds.example.com/all.zip"})


def test_required_read_tokens_without_any_token_refuse_to_start() -> None:
    with pytest.raises(ConfigError, match=r"access\.required: no read token is configured"):
        load_config(None, {"MIRROR_ACCESS_REQUIRED": "true"})


@pytest.mark.parametrize(
    "url", ["hooks.example.test/services/T0/B0/s3cr3tK3y", "ftp://example.test/s3cr3tK3y"]
)
def test_a_bad_webhook_url_is_refused_without_printing_it(url: str) -> None:
    # The URL of a Slack-style webhook is its secret: the error goes to stderr and the logs.
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"MIRROR_TAKEDOWNS_WEBHOOK": url})
    assert "takedowns.webhook" in str(caught.value)
    assert "s3cr3tK3y" not in str(caught.value)
    assert "example.test" not in str(caught.value)
