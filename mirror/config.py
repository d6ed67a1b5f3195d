"""Settings: frozen dataclasses loaded from `config/mirror.toml`, then `MIRROR_*` environment
overrides. `load_config` is the only reader of the environment (passed in) and of the file.
Every invalid value raises `ConfigError` naming the key and the value."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from mirror.errors import ConfigError

ECOSYSTEMS: tuple[str, ...] = ("npm", "pypi", "maven")
# Maven Central is the documented default upstream for Maven (DESIGN.md, Settings).
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2/"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_GLOB_NAME = re.compile(r"^[A-Za-z0-9@/._:*?\-\[\]!]+$")


def parse_duration(text: str | int | float, *, key: str = "duration") -> timedelta:
    """Parse `0`, `90m`, `72h`, `3d`, `1d12h`, `30s`, `500ms`, `2w` (or plain seconds).

    Raises ConfigError naming `key` for anything else, including negative values.
    """
    if isinstance(text, bool):
        raise ConfigError(f"{key}: expected a duration like 90m, 72h or 3d, got {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ConfigError(f"{key}: a duration cannot be negative, got {text!r}")
        return timedelta(seconds=text)
    value = text.strip().lower()
    if value in {"0", "off", "none"}:
        return timedelta(0)
    if re.fullmatch(r"\d+(\.\d+)?", value):
        try:
            return timedelta(seconds=float(value))
        except OverflowError:
            raise ConfigError(f"{key}: {text!r} is longer than any duration allowed") from None
    pos, total = 0, timedelta(0)
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        try:
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        except OverflowError:
            raise ConfigError(f"{key}: {text!r} is longer than any duration allowed") from None
        pos = match.end()
    if pos != len(value) or not value:
        raise ConfigError(f"{key}: expected a duration like 0, 90m, 72h or 3d, got {text!r}")
    return total


def parse_size(text: str | int, *, key: str = "size") -> int:
    """Parse `0` (no limit), `500M`, `20G`, `1.5TiB` or a byte count."""
    if isinstance(text, bool):
        raise ConfigError(f"{key}: expected a size like 500M or 20G, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"{key}: a size cannot be negative, got {text!r}")
        return text
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"{key}: expected a size like 0, 500M or 20G, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantineRule:
    """A per-package quarantine age: `package` is a name or glob (`@ourcorp/*`)."""

    ecosystem: str
    package: str
    age: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantineConfig:
    default: timedelta = timedelta(days=3)
    per_ecosystem: Mapping[str, timedelta] = field(default_factory=dict)
    rules: tuple[QuarantineRule, ...] = ()
    unknown: Literal["quarantine", "allow"] = "quarantine"


@dataclass(frozen=True, slots=True, kw_only=True)
class EcosystemConfig:
    name: str
    upstream: str | None
    # Extra hosts artifacts may come from (e.g. a registry's separate file host).
    file_hosts: tuple[str, ...] = ()
    # The `Authorization` value sent to the upstream's own host (never to file hosts): a
    # private registry's credentials. Kept out of reprs; `mirror config` shows only "<set>".
    upstream_auth: str | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.upstream is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    metadata_ttl: timedelta = timedelta(minutes=5)
    stale_max: timedelta = timedelta(days=7)
    max_bytes: int = 0  # 0 = no cap
    max_document_bytes: int = 256 * 1024**2
    # Every in-memory cache of a worker (documents, parsed forms, rendered views, small
    # artifacts) shares this many bytes.
    memory_budget: int = 96 * 1024**2
    # A document is refetched ahead of its TTL (an unknown file or version was asked for) at
    # most once per this interval: no client turns its requests into upstream requests.
    refresh_interval: timedelta = timedelta(seconds=30)
    # An upstream "no such document" (404/410) is remembered this long.
    negative_ttl: timedelta = timedelta(minutes=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    connect_timeout: timedelta = timedelta(seconds=10)
    read_timeout: timedelta = timedelta(seconds=60)
    retries: int = 2
    backoff: timedelta = timedelta(milliseconds=500)
    user_agent: str = "quarantine-mirror"


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    redis_url: str | None = None
    poll_interval: timedelta = timedelta(milliseconds=250)
    # The serving path waits at most this long on shared state, then uses what it knows.
    timeout: timedelta = timedelta(milliseconds=500)
    # Download ledger entries older than this are dropped.
    ledger_retention: timedelta = timedelta(days=90)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    tokens: Mapping[str, str] = field(default_factory=dict)
    protect_reads: bool = False
    # Impact reports name client addresses: they need a token unless this opens them.
    open_impact: bool = False
    # Audit entries are kept this long (never pruned by count).
    audit_retention: timedelta = timedelta(days=365)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """Connection limits of each worker process."""

    header_timeout: timedelta = timedelta(seconds=10)
    idle_timeout: timedelta = timedelta(seconds=30)
    max_connections: int = 2048
    max_connections_per_client: int = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    cert: Path | None = None
    key: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    # Proxies whose X-Forwarded-* headers are believed (addresses or CIDRs); the client is
    # the rightmost X-Forwarded-For hop that is not one of them.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    data_dir: Path = Path("data")
    workers: int = 1
    shutdown_grace: timedelta = timedelta(seconds=30)
    access_log: bool = True
    log_level: str = "INFO"
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
    npm: EcosystemConfig = field(default_factory=lambda: EcosystemConfig(name="npm", upstream=None))
    pypi: EcosystemConfig = field(
        default_factory=lambda: EcosystemConfig(name="pypi", upstream=None)
    )
    maven: EcosystemConfig = field(
        default_factory=lambda: EcosystemConfig(name="maven", upstream=MAVEN_CENTRAL)
    )
    cache: CacheConfig = field(default_factory=CacheConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    state: StateConfig = field(default_factory=StateConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def ecosystem(self, name: str) -> EcosystemConfig:
        if name not in ECOSYSTEMS:
            raise KeyError(name)
        ecosystem: EcosystemConfig = getattr(self, name)
        return ecosystem

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


# env variable -> dotted TOML key. Every setting is overridable.
ENV_KEYS: dict[str, str] = {
    "MIRROR_LISTEN": "listen",
    "MIRROR_PUBLIC_URL": "public_url",
    "MIRROR_TRUSTED_PROXIES": "trusted_proxies",
    "MIRROR_DATA_DIR": "data_dir",
    "MIRROR_WORKERS": "workers",
    "MIRROR_SHUTDOWN_GRACE": "shutdown_grace",
    "MIRROR_ACCESS_LOG": "access_log",
    "MIRROR_LOG_LEVEL": "log_level",
    "MIRROR_QUARANTINE": "quarantine.default",
    "MIRROR_QUARANTINE_UNKNOWN": "quarantine.unknown",
    "MIRROR_NPM_UPSTREAM": "npm.upstream",
    "MIRROR_NPM_UPSTREAM_AUTH": "npm.upstream_auth",
    "MIRROR_PYPI_UPSTREAM_AUTH": "pypi.upstream_auth",
    "MIRROR_MAVEN_UPSTREAM_AUTH": "maven.upstream_auth",
    "MIRROR_NPM_QUARANTINE": "quarantine.npm.age",
    "MIRROR_PYPI_UPSTREAM": "pypi.upstream",
    "MIRROR_PYPI_FILE_HOSTS": "pypi.file_hosts",
    "MIRROR_PYPI_QUARANTINE": "quarantine.pypi.age",
    "MIRROR_MAVEN_UPSTREAM": "maven.upstream",
    "MIRROR_MAVEN_QUARANTINE": "quarantine.maven.age",
    "MIRROR_REDIS_URL": "state.redis_url",
    "MIRROR_STATE_POLL_INTERVAL": "state.poll_interval",
    "MIRROR_STATE_TIMEOUT": "state.timeout",
    "MIRROR_LEDGER_RETENTION": "state.ledger_retention",
    "MIRROR_AUDIT_RETENTION": "admin.audit_retention",
    "MIRROR_MEMORY_BUDGET": "cache.memory_budget",
    "MIRROR_HEADER_TIMEOUT": "limits.header_timeout",
    "MIRROR_IDLE_TIMEOUT": "limits.idle_timeout",
    "MIRROR_MAX_CONNECTIONS": "limits.max_connections",
    "MIRROR_MAX_CONNECTIONS_PER_CLIENT": "limits.max_connections_per_client",
    "MIRROR_ADMIN_TOKENS": "admin.tokens",
    "MIRROR_ADMIN_PROTECT_READS": "admin.protect_reads",
    "MIRROR_ADMIN_OPEN_IMPACT": "admin.open_impact",
    "MIRROR_CACHE_METADATA_TTL": "cache.metadata_ttl",
    "MIRROR_CACHE_STALE_MAX": "cache.stale_max",
    "MIRROR_CACHE_MAX_BYTES": "cache.max_bytes",
    "MIRROR_CACHE_REFRESH_INTERVAL": "cache.refresh_interval",
    "MIRROR_CACHE_NEGATIVE_TTL": "cache.negative_ttl",
    "MIRROR_UPSTREAM_CONNECT_TIMEOUT": "upstream.connect_timeout",
    "MIRROR_UPSTREAM_READ_TIMEOUT": "upstream.read_timeout",
    "MIRROR_UPSTREAM_RETRIES": "upstream.retries",
    "MIRROR_UPSTREAM_BACKOFF": "upstream.backoff",
    "MIRROR_TLS_CERT": "tls.cert",
    "MIRROR_TLS_KEY": "tls.key",
}

_TOP_KEYS = {
    "listen", "public_url", "trusted_proxies", "data_dir", "workers", "shutdown_grace",
    "access_log", "log_level", "quarantine", "npm", "pypi", "maven", "cache", "upstream",
    "state", "admin", "tls", "limits",
}  # fmt: skip


def default_config_path() -> Path:
    return Path("config/mirror.toml")


def load_config(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Read `path` (if given and present; `MIRROR_CONFIG` names it otherwise), apply the
    `MIRROR_*` overrides from `environ`, validate, and return a frozen `Config`."""
    if path is None and environ.get("MIRROR_CONFIG"):
        path = Path(environ["MIRROR_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"MIRROR_CONFIG: no such file {str(path)!r}")
    raw: dict[str, Any] = {}
    if path is not None and path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for env_name, dotted in ENV_KEYS.items():
        if env_name in environ:
            _set_dotted(raw, dotted, environ[env_name], source=env_name)
    return _build(raw)


def _set_dotted(raw: dict[str, Any], dotted: str, value: str, *, source: str) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: cannot set {dotted!r}, {part!r} is not a table")
        node = child
    node[leaf] = value


def _build(raw: dict[str, Any]) -> Config:
    if "trust_forwarded" in raw:
        raise ConfigError(
            "trust_forwarded: replaced by trusted_proxies (MIRROR_TRUSTED_PROXIES): list the "
            "addresses or CIDRs of the proxies in front of the mirror"
        )
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    host, port = _parse_listen(raw.get("listen", "127.0.0.1:8080"))
    workers = _int(raw.get("workers", os.cpu_count() or 1), "workers", minimum=1)
    public_url = raw.get("public_url") or None
    if public_url is not None:
        public_url = _url(public_url, "public_url").rstrip("/")
    return Config(
        host=host,
        port=port,
        public_url=public_url,
        trusted_proxies=_networks(raw.get("trusted_proxies", ()), "trusted_proxies"),
        data_dir=Path(_str(raw.get("data_dir", "data"), "data_dir")),
        workers=workers,
        shutdown_grace=parse_duration(raw.get("shutdown_grace", "30s"), key="shutdown_grace"),
        access_log=_bool(raw.get("access_log", True), "access_log"),
        log_level=_choice(
            str(raw.get("log_level", "INFO")).upper(),
            "log_level",
            ("DEBUG", "INFO", "WARNING", "ERROR"),
        ),
        quarantine=_quarantine(_table(raw, "quarantine")),
        npm=_ecosystem("npm", _table(raw, "npm"), default_upstream=None),
        pypi=_ecosystem("pypi", _table(raw, "pypi"), default_upstream=None),
        maven=_ecosystem("maven", _table(raw, "maven"), default_upstream=MAVEN_CENTRAL),
        cache=_cache(_table(raw, "cache")),
        upstream=_upstream(_table(raw, "upstream")),
        state=_state(_table(raw, "state")),
        admin=_admin(_table(raw, "admin")),
        tls=_tls(_table(raw, "tls")),
        limits=_limits(_table(raw, "limits")),
    )


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table, got {value!r}")
    return value


def _check_keys(table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        names = ", ".join(f"{prefix}.{key}" for key in sorted(unknown))
        raise ConfigError(f"unknown setting(s): {names}")


def _parse_listen(value: Any) -> tuple[str, int]:
    text = _str(value, "listen")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"listen: expected HOST:PORT such as 127.0.0.1:8080, got {text!r}")
    return host.strip("[]"), int(port_text)


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value.strip()


def _int(value: Any, key: str, *, minimum: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
    if isinstance(value, bool) or number < minimum:
        raise ConfigError(f"{key}: expected a whole number >= {minimum}, got {value!r}")
    return number


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _url(value: Any, key: str) -> str:
    text = _str(value, key)
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{key}: expected an http(s) URL, got {text!r}")
    return text


def _hosts(value: Any, key: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{key}: expected a list of host names, got {value!r}")
    hosts = tuple(str(item).strip().lower() for item in items if str(item).strip())
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9.\-]+(:\d+)?", host):
            raise ConfigError(f"{key}: {host!r} is not a host name")
    return hosts


def _networks(value: Any, key: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.5, 10.1.0.0/16` (or a TOML list) → networks; a bare address is a /32 or /128."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{key}: expected a list of addresses or CIDRs, got {value!r}")
    networks: list[IPNetwork] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{key}: {text!r} is not an IP address or CIDR") from None
    return tuple(networks)


def _ecosystem(
    name: str, table: dict[str, Any], *, default_upstream: str | None
) -> EcosystemConfig:
    _check_keys(table, name, {"upstream", "file_hosts", "upstream_auth"})
    upstream = table.get("upstream", default_upstream)
    if upstream in ("", "off", "none"):
        upstream = None
    auth = _upstream_auth(table.get("upstream_auth"), f"{name}.upstream_auth")
    if upstream is not None:
        upstream = _url(upstream, f"{name}.upstream")
        upstream, from_url = _split_credentials(upstream)
        if from_url is not None:
            if auth is not None:
                raise ConfigError(
                    f"{name}.upstream carries credentials and {name}.upstream_auth is set too: "
                    "keep one"
                )
            auth = from_url
        if not upstream.endswith("/"):
            upstream += "/"
    return EcosystemConfig(
        name=name,
        upstream=upstream,
        file_hosts=_hosts(table.get("file_hosts", ()), f"{name}.file_hosts"),
        upstream_auth=auth,
    )


def _upstream_auth(value: Any, key: str) -> str | None:
    """`Bearer <token>`, `Basic <base64>`, or `user:password` (sent as Basic)."""
    if value is None or value == "":
        return None
    text = _str(value, key).strip()
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ConfigError(f"{key}: control characters are not allowed")
    scheme, _, credentials = text.partition(" ")
    if scheme.lower() in ("bearer", "basic") and credentials.strip():
        return f"{scheme.capitalize()} {credentials.strip()}"
    if ":" in text and " " not in text:
        return "Basic " + base64.b64encode(text.encode()).decode()
    raise ConfigError(f"{key}: expected 'Bearer <token>', 'Basic <base64>' or 'user:password'")


def _split_credentials(url: str) -> tuple[str, str | None]:
    """`https://user:secret@host/path` → (`https://host/path`, Basic auth for user:secret)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return bare, "Basic " + base64.b64encode(userinfo.encode()).decode()


def _quarantine(table: dict[str, Any]) -> QuarantineConfig:
    _check_keys(table, "quarantine", {"default", "unknown", "rules", *ECOSYSTEMS})
    per_ecosystem: dict[str, timedelta] = {}
    for ecosystem in ECOSYSTEMS:
        sub = table.get(ecosystem)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise ConfigError(f"quarantine.{ecosystem}: expected a table with age, got {sub!r}")
        _check_keys(sub, f"quarantine.{ecosystem}", {"age"})
        if "age" in sub:
            per_ecosystem[ecosystem] = parse_duration(sub["age"], key=f"quarantine.{ecosystem}.age")
    rules_raw = table.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError(f"quarantine.rules: expected an array of tables, got {rules_raw!r}")
    rules = []
    for index, rule in enumerate(rules_raw):
        key = f"quarantine.rules[{index}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{key}: expected a table, got {rule!r}")
        _check_keys(rule, key, {"ecosystem", "package", "age"})
        ecosystem = _choice(str(rule.get("ecosystem", "")), f"{key}.ecosystem", ECOSYSTEMS)
        package = _str(rule.get("package"), f"{key}.package")
        if not _GLOB_NAME.fullmatch(package):
            raise ConfigError(f"{key}.package: not a package name or glob: {package!r}")
        if "age" not in rule:
            raise ConfigError(f"{key}.age: required")
        age = parse_duration(rule["age"], key=f"{key}.age")
        rules.append(QuarantineRule(ecosystem=ecosystem, package=package, age=age))
    unknown = _choice(
        str(table.get("unknown", "quarantine")).lower(), "quarantine.unknown",
        ("quarantine", "allow"),
    )  # fmt: skip
    return QuarantineConfig(
        default=parse_duration(table.get("default", "3d"), key="quarantine.default"),
        per_ecosystem=per_ecosystem,
        rules=tuple(rules),
        unknown="allow" if unknown == "allow" else "quarantine",
    )


def _cache(table: dict[str, Any]) -> CacheConfig:
    keys = {
        "metadata_ttl", "stale_max", "max_bytes", "max_document_bytes", "refresh_interval",
        "negative_ttl", "memory_budget",
    }  # fmt: skip
    _check_keys(table, "cache", keys)
    return CacheConfig(
        metadata_ttl=parse_duration(table.get("metadata_ttl", "5m"), key="cache.metadata_ttl"),
        stale_max=parse_duration(table.get("stale_max", "7d"), key="cache.stale_max"),
        max_bytes=parse_size(table.get("max_bytes", 0), key="cache.max_bytes"),
        max_document_bytes=parse_size(
            table.get("max_document_bytes", "256M"), key="cache.max_document_bytes"
        ),
        refresh_interval=parse_duration(
            table.get("refresh_interval", "30s"), key="cache.refresh_interval"
        ),
        negative_ttl=parse_duration(table.get("negative_ttl", "1m"), key="cache.negative_ttl"),
        memory_budget=parse_size(table.get("memory_budget", "96M"), key="cache.memory_budget"),
    )


def _upstream(table: dict[str, Any]) -> UpstreamConfig:
    keys = {"connect_timeout", "read_timeout", "retries", "backoff", "user_agent"}
    _check_keys(table, "upstream", keys)
    return UpstreamConfig(
        connect_timeout=_positive(table.get("connect_timeout", "10s"), "upstream.connect_timeout"),
        read_timeout=_positive(table.get("read_timeout", "60s"), "upstream.read_timeout"),
        retries=_int(table.get("retries", 2), "upstream.retries"),
        backoff=parse_duration(table.get("backoff", "500ms"), key="upstream.backoff"),
        user_agent=_str(table.get("user_agent", "quarantine-mirror"), "upstream.user_agent"),
    )


def _positive(value: Any, key: str) -> timedelta:
    duration = parse_duration(value, key=key)
    if duration <= timedelta(0):
        raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    return duration


def _state(table: dict[str, Any]) -> StateConfig:
    _check_keys(table, "state", {"redis_url", "poll_interval", "timeout", "ledger_retention"})
    redis_url = table.get("redis_url") or None
    if redis_url is not None:
        redis_url = _str(redis_url, "state.redis_url")
        if urlsplit(redis_url).scheme not in {"redis", "rediss", "unix"}:
            raise ConfigError(
                f"state.redis_url: expected redis://, rediss:// or unix://, got {redis_url!r}"
            )
    return StateConfig(
        redis_url=redis_url,
        poll_interval=_positive(table.get("poll_interval", "250ms"), "state.poll_interval"),
        timeout=_positive(table.get("timeout", "500ms"), "state.timeout"),
        ledger_retention=_positive(table.get("ledger_retention", "90d"), "state.ledger_retention"),
    )


def _admin(table: dict[str, Any]) -> AdminConfig:
    _check_keys(table, "admin", {"tokens", "protect_reads", "open_impact", "audit_retention"})
    raw_tokens = table.get("tokens", {})
    tokens: dict[str, str] = {}
    if isinstance(raw_tokens, str):
        for item in filter(None, (part.strip() for part in raw_tokens.split(","))):
            name, sep, token = item.partition(":")
            if not sep or not name.strip() or not token.strip():
                raise ConfigError(
                    "admin.tokens: expected name:token[,name2:token2], got an entry without "
                    f"a name or token ({name.strip() or '?'}:…)"
                )
            tokens[name.strip()] = token.strip()
    elif isinstance(raw_tokens, dict):
        for name, token in raw_tokens.items():
            tokens[str(name)] = _str(token, f"admin.tokens.{name}")
    else:
        raise ConfigError("admin.tokens: expected a table or name:token,… string")
    for name, token in tokens.items():
        if len(token) < 16:
            raise ConfigError(f"admin.tokens.{name}: a token must be at least 16 characters")
    return AdminConfig(
        tokens=tokens,
        protect_reads=_bool(table.get("protect_reads", False), "admin.protect_reads"),
        open_impact=_bool(table.get("open_impact", False), "admin.open_impact"),
        audit_retention=_positive(table.get("audit_retention", "365d"), "admin.audit_retention"),
    )


def _tls(table: dict[str, Any]) -> TLSConfig:
    _check_keys(table, "tls", {"cert", "key"})
    cert, key = table.get("cert") or None, table.get("key") or None
    if (cert is None) != (key is None):
        raise ConfigError("tls.cert and tls.key: set both or neither")
    paths: list[Path] = []
    for name, value in (("tls.cert", cert), ("tls.key", key)):
        if value is None:
            continue
        path = Path(_str(value, name))
        if not path.is_file():
            raise ConfigError(f"{name}: no such file {str(path)!r}")
        paths.append(path)
    if not paths:
        return TLSConfig()
    return TLSConfig(cert=paths[0], key=paths[1])


def _limits(table: dict[str, Any]) -> LimitsConfig:
    keys = {"header_timeout", "idle_timeout", "max_connections", "max_connections_per_client"}
    _check_keys(table, "limits", keys)
    return LimitsConfig(
        header_timeout=_positive(table.get("header_timeout", "10s"), "limits.header_timeout"),
        idle_timeout=_positive(table.get("idle_timeout", "30s"), "limits.idle_timeout"),
        max_connections=_int(
            table.get("max_connections", 2048), "limits.max_connections", minimum=1
        ),
        max_connections_per_client=_int(
            table.get("max_connections_per_client", 256),
            "limits.max_connections_per_client",
            minimum=1,
        ),
    )
