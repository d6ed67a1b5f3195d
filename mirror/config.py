"""Settings: frozen dataclasses loaded from `config/mirror.toml`, then `MIRROR_*` environment
overrides. `load_config` is the only reader of the environment (passed in) and of the file.
Every invalid value raises `ConfigError` naming the key and the value.

The schema is written once: each setting is a dataclass field declared with `setting()` (its
parser, its default, and the documented variable name where it is not `MIRROR_<TABLE>_<KEY>`);
the tables are `section()` fields of `Config`. The keys each table accepts, the environment
variables (`ENV_KEYS`) and the loader are all derived from those declarations."""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit, urlunsplit

from mirror.errors import ConfigError
from mirror.model import ECOSYSTEMS, RISK_ACTIONS, RISK_SIGNALS, RiskAction

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
# A setting's parser: (raw value from TOML or the environment, its dotted key) → the value.
Parser = Callable[[Any, str], Any]


def setting(
    default: Any = MISSING,
    *,
    parse: Parser,
    env: str | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A leaf setting, declared once: its TOML key is the field's name in its table, its
    default the field's default, its environment variable `MIRROR_<TABLE>_<KEY>` unless
    `env` names the documented one. `load_config` and `ENV_KEYS` read these declarations."""
    metadata = {"parse": parse, "env": env}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def section(factory: Callable[[], Any], *, env_prefix: str | None = None) -> Any:
    """A table of settings (`[cache]`, `[npm]` …): its defaults are `factory()`'s; its
    variables are named `<env_prefix><KEY>` (`MIRROR_<TABLE>_` unless given)."""
    return field(default_factory=factory, metadata={"section": True, "env_prefix": env_prefix})


def _duration(value: Any, key: str) -> timedelta:
    return parse_duration(value, key=key)


def _positive(value: Any, key: str) -> timedelta:
    duration = parse_duration(value, key=key)
    if duration <= timedelta(0):
        raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    return duration


def _size(value: Any, key: str) -> int:
    return parse_size(value, key=key)


def _whole(minimum: int) -> Parser:
    def parse(value: Any, key: str) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
        if isinstance(value, bool) or number < minimum:
            raise ConfigError(f"{key}: expected a whole number >= {minimum}, got {value!r}")
        return number

    return parse


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value.strip()


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _check_choice(value: str, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _choice(*choices: str, normalize: Callable[[str], str] = str.lower) -> Parser:
    def parse(value: Any, key: str) -> str:
        return _check_choice(normalize(str(value)), key, choices)

    return parse


def _url(value: Any, key: str, *, secret: bool = False) -> str:
    """An http(s) URL; a `secret` one (a webhook's path is its key) is never echoed in the
    error, which goes to stderr and the logs."""
    text = _str(value, key)
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        got = "<set, hidden: it may hold a secret>" if secret else repr(text)
        raise ConfigError(f"{key}: expected an http(s) URL, got {got}")
    return text


def _public_url(value: Any, key: str) -> str | None:
    return _url(value, key).rstrip("/") if value else None


def _path(value: Any, key: str) -> Path:
    return Path(_str(value, key))


def _file(value: Any, key: str) -> Path | None:
    if not value:
        return None
    path = Path(_str(value, key))
    if not path.is_file():
        raise ConfigError(f"{key}: no such file {str(path)!r}")
    return path


def _items(value: Any, key: str, expected: str) -> list[str]:
    """A comma-separated string (the environment) or a TOML list → its non-empty items."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{key}: expected a list of {expected}, got {value!r}")
    return [text for text in (str(item).strip() for item in items) if text]


def _hosts(value: Any, key: str) -> tuple[str, ...]:
    hosts = tuple(item.lower() for item in _items(value, key, "host names"))
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9.\-]+(:\d+)?", host):
            raise ConfigError(f"{key}: {host!r} is not a host name")
    return hosts


def _networks(value: Any, key: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.5, 10.1.0.0/16` (or a TOML list) → networks; a bare address is a /32 or /128."""
    networks: list[IPNetwork] = []
    for text in _items(value, key, "addresses or CIDRs"):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{key}: {text!r} is not an IP address or CIDR") from None
    return tuple(networks)


def _listen(value: Any, key: str) -> tuple[str, int]:
    text = _str(value, key)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT such as 127.0.0.1:8080, got {text!r}")
    return host.strip("[]"), int(port_text)


def _upstream(value: Any, key: str) -> str | None:
    """An upstream base URL ending in `/`; `""`, `off` or `none` switch the ecosystem off.
    Credentials in the URL stay in it here: `_finish_ecosystem` moves them out."""
    if value is None or value in ("", "off", "none"):
        return None
    upstream = _url(value, key)
    return upstream if upstream.endswith("/") else upstream + "/"


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


def _redis_url(value: Any, key: str) -> str | None:
    if not value:
        return None
    redis_url = _str(value, key)
    if urlsplit(redis_url).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"{key}: expected redis://, rediss:// or unix://, got {redis_url!r}")
    return redis_url


def _tokens(value: Any, key: str) -> dict[str, str]:
    """`name:token,name2:token2` (the environment) or a TOML table of name = token."""
    tokens: dict[str, str] = {}
    if isinstance(value, str):
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, token = item.partition(":")
            if not sep or not name.strip() or not token.strip():
                raise ConfigError(
                    f"{key}: expected name:token[,name2:token2], got an entry without "
                    f"a name or token ({name.strip() or '?'}:…)"
                )
            tokens[name.strip()] = token.strip()
    elif isinstance(value, dict):
        for name, token in value.items():
            tokens[str(name)] = _str(token, f"{key}.{name}")
    else:
        raise ConfigError(f"{key}: expected a table or name:token,… string")
    for name, token in tokens.items():
        if len(token) < 16:
            raise ConfigError(f"{key}.{name}: a token must be at least 16 characters")
    return tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantineRule:
    """A per-package quarantine age: `package` is a name or glob (`@ourcorp/*`)."""

    ecosystem: str
    package: str
    age: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantineConfig:
    default: timedelta = setting(timedelta(days=3), parse=_duration, env="MIRROR_QUARANTINE")
    unknown: Literal["quarantine", "allow"] = setting(
        "quarantine", parse=_choice("quarantine", "allow")
    )
    # `[quarantine.<ecosystem>] age` (MIRROR_<ECOSYSTEM>_QUARANTINE) and `[[quarantine.rules]]`
    # are tables of their own: `_finish_quarantine` reads them.
    per_ecosystem: Mapping[str, timedelta] = field(default_factory=dict)
    rules: tuple[QuarantineRule, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskRule:
    """What to do with a version showing `signal` (a name of `model.RISK_SIGNALS`):
    `ecosystem` one ecosystem or `*`, `package` a name or glob (`*` = every package),
    `action` note | extend (hold until published + `age`) | hold (until an admin exempts)."""

    signal: str
    action: RiskAction
    ecosystem: str = "*"
    package: str = "*"
    age: timedelta = timedelta(0)  # for `extend`


# The built-in risk rules, weaker than any written in the settings (`[[risk.rules]]`): a
# signal no rule names is only noted. Install scripts and dropped provenance are how the
# token-stealing worms publish; a version showing them waits two weeks instead of the
# quarantine age.
DEFAULT_RISK_RULES: tuple[RiskRule, ...] = (
    RiskRule(signal="install-script-added", action="extend", age=timedelta(days=14)),
    RiskRule(signal="provenance-dropped", action="extend", age=timedelta(days=14)),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskConfig:
    """`[[risk.rules]]` (read by `_finish_risk`): the settings' own rules, over the built-in
    `defaults` (a settings rule for the same signal and package wins over them)."""

    rules: tuple[RiskRule, ...] = ()
    defaults: tuple[RiskRule, ...] = DEFAULT_RISK_RULES


def _webhook(value: Any, key: str) -> str | None:
    return _url(value, key, secret=True) if value else None


@dataclass(frozen=True, slots=True, kw_only=True)
class TakedownsConfig:
    """What the mirror does when an upstream stops offering a version it listed."""

    # Each takedown event is POSTed here as JSON (a Slack-style incoming webhook URL carries
    # its secret in the path: kept out of reprs and logs; `mirror config` shows "<set>").
    webhook: str | None = field(
        default=None,
        repr=False,
        metadata={"parse": _webhook, "env": "MIRROR_TAKEDOWNS_WEBHOOK"},
    )
    webhook_timeout: timedelta = setting(timedelta(seconds=10), parse=_positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class EcosystemConfig:
    name: str
    upstream: str | None = setting(None, parse=_upstream)
    # Extra hosts artifacts may come from (e.g. a registry's separate file host).
    file_hosts: tuple[str, ...] = setting((), parse=_hosts)
    # The `Authorization` value sent to the upstream's own host (never to file hosts): a
    # private registry's credentials. Kept out of reprs; `mirror config` shows only "<set>".
    upstream_auth: str | None = field(
        default=None, repr=False, metadata={"parse": _upstream_auth, "env": None}
    )

    @property
    def enabled(self) -> bool:
        return self.upstream is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    metadata_ttl: timedelta = setting(timedelta(minutes=5), parse=_duration)
    stale_max: timedelta = setting(timedelta(days=7), parse=_duration)
    max_bytes: int = setting(0, parse=_size)  # 0 = no cap
    max_document_bytes: int = setting(256 * 1024**2, parse=_size)
    # Every in-memory cache of a worker (documents, parsed forms, rendered views, small
    # artifacts) shares this many bytes.
    memory_budget: int = setting(96 * 1024**2, parse=_size, env="MIRROR_MEMORY_BUDGET")
    # A document is refetched ahead of its TTL (an unknown file or version was asked for) at
    # most once per this interval: no client turns its requests into upstream requests.
    refresh_interval: timedelta = setting(timedelta(seconds=30), parse=_duration)
    # An upstream "no such document" (404/410) is remembered this long.
    negative_ttl: timedelta = setting(timedelta(minutes=1), parse=_duration)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    connect_timeout: timedelta = setting(timedelta(seconds=10), parse=_positive)
    read_timeout: timedelta = setting(timedelta(seconds=60), parse=_positive)
    retries: int = setting(2, parse=_whole(0))
    backoff: timedelta = setting(timedelta(milliseconds=500), parse=_duration)
    user_agent: str = setting("quarantine-mirror", parse=_str)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig:
    redis_url: str | None = setting(None, parse=_redis_url, env="MIRROR_REDIS_URL")
    poll_interval: timedelta = setting(timedelta(milliseconds=250), parse=_positive)
    # The serving path waits at most this long on shared state, then uses what it knows.
    timeout: timedelta = setting(timedelta(milliseconds=500), parse=_positive)
    # Download ledger entries older than this are dropped.
    ledger_retention: timedelta = setting(
        timedelta(days=90), parse=_positive, env="MIRROR_LEDGER_RETENTION"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    tokens: Mapping[str, str] = setting(parse=_tokens, factory=dict)
    # Read-only admin tokens: every admin read (the dashboard's pages, impact, audit), no write.
    read_tokens: Mapping[str, str] = setting(parse=_tokens, factory=dict)
    protect_reads: bool = setting(False, parse=_bool)
    # Impact reports name client addresses: they need a token unless this opens them.
    open_impact: bool = setting(False, parse=_bool)
    # Audit entries are kept this long (never pruned by count).
    audit_retention: timedelta = setting(
        timedelta(days=365), parse=_positive, env="MIRROR_AUDIT_RETENTION"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UiConfig:
    """The web dashboard at `/ui/` (`mirror.ui`): on by default; it needs an admin or
    read-only admin token to log in, so without tokens it only shows its login page."""

    enabled: bool = setting(True, parse=_bool)
    # A login lasts this long; changing or removing the token ends it at once.
    session_lifetime: timedelta = setting(timedelta(hours=8), parse=_positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessConfig:
    """Who may read packages through the mirror. Read tokens name the client or team in the
    download ledger; `required` refuses anonymous reads (401)."""

    # name:token pairs; a client sends the token as npm's `_authToken` (Bearer), in pip's or
    # uv's index URL (`name:token@`, Basic) or as Maven `<server>` credentials (Basic).
    tokens: Mapping[str, str] = setting(parse=_tokens, factory=dict)
    required: bool = setting(False, parse=_bool)


def _feed_sources(value: Any, key: str) -> tuple[str, ...]:
    """Directories (or zips) of OSV advisories, or http(s) URLs of such a zip."""
    sources = tuple(_items(value, key, "directories, zip files or URLs"))
    for source in sources:
        if "://" in source:
            _url(source, key)
    return sources


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedsConfig:
    """Advisory feeds synced into blocks on a schedule (`mirror import-osv` on a timer)."""

    sources: tuple[str, ...] = setting((), parse=_feed_sources, env="MIRROR_FEEDS")
    interval: timedelta = setting(timedelta(hours=1), parse=_positive)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """Connection limits of each worker process."""

    header_timeout: timedelta = setting(timedelta(seconds=10), parse=_positive)
    idle_timeout: timedelta = setting(timedelta(seconds=30), parse=_positive)
    max_connections: int = setting(2048, parse=_whole(1))
    max_connections_per_client: int = setting(256, parse=_whole(1))


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    cert: Path | None = setting(None, parse=_file)
    key: Path | None = setting(None, parse=_file)

    @property
    def enabled(self) -> bool:
        return self.cert is not None


def _default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    # `listen = "HOST:PORT"` (MIRROR_LISTEN) is one setting kept as two fields.
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = setting(None, parse=_public_url)
    # Proxies whose X-Forwarded-* headers are believed (addresses or CIDRs); the client is
    # the rightmost X-Forwarded-For hop that is not one of them.
    trusted_proxies: tuple[IPNetwork, ...] = setting((), parse=_networks)
    # The cache: artifacts, cached documents (safe to delete while the mirror is stopped).
    data_dir: Path = setting(Path("data"), parse=_path)
    # The embedded state (blocks, exemptions, freezes, pins, audit, ledger) and this server's
    # own files (the last-known policy copy, the supervisor's status, its fetch locks); unset,
    # they live in `data_dir` (`state_directory`). Replicas may share a cache, never a
    # state_dir.
    state_dir: Path | None = setting(None, parse=_path)
    workers: int = setting(parse=_whole(1), factory=_default_workers)
    shutdown_grace: timedelta = setting(timedelta(seconds=30), parse=_duration)
    access_log: bool = setting(True, parse=_bool)
    log_level: str = setting(
        "INFO", parse=_choice("DEBUG", "INFO", "WARNING", "ERROR", normalize=str.upper)
    )
    quarantine: QuarantineConfig = section(QuarantineConfig)
    risk: RiskConfig = section(RiskConfig)
    takedowns: TakedownsConfig = section(TakedownsConfig)
    npm: EcosystemConfig = section(lambda: EcosystemConfig(name="npm"))
    pypi: EcosystemConfig = section(lambda: EcosystemConfig(name="pypi"))
    maven: EcosystemConfig = section(lambda: EcosystemConfig(name="maven", upstream=MAVEN_CENTRAL))
    cache: CacheConfig = section(CacheConfig)
    upstream: UpstreamConfig = section(UpstreamConfig)
    state: StateConfig = section(StateConfig)
    admin: AdminConfig = section(AdminConfig)
    ui: UiConfig = section(UiConfig)
    access: AccessConfig = section(AccessConfig)
    feeds: FeedsConfig = section(FeedsConfig)
    tls: TLSConfig = section(TLSConfig)
    limits: LimitsConfig = section(LimitsConfig, env_prefix="MIRROR_")

    def ecosystem(self, name: str) -> EcosystemConfig:
        if name not in ECOSYSTEMS:
            raise KeyError(name)
        ecosystem: EcosystemConfig = getattr(self, name)
        return ecosystem

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def state_directory(self) -> Path:
        """Where the embedded state and the last-known policy copy live."""
        return self.state_dir if self.state_dir is not None else self.data_dir


LISTEN_KEY = "listen"


def _leaves(cls: type) -> list[Field[Any]]:
    return [item for item in fields(cls) if "parse" in item.metadata]


def _sections(cls: type) -> list[Field[Any]]:
    return [item for item in fields(cls) if item.metadata.get("section")]


def _env_keys() -> dict[str, str]:
    """Every environment variable → its dotted TOML key, derived from the declarations."""
    pairs = [("MIRROR_LISTEN", LISTEN_KEY)]
    pairs += [
        (item.metadata["env"] or f"MIRROR_{item.name.upper()}", item.name)
        for item in _leaves(Config)
    ]
    defaults = Config()
    for table in _sections(Config):
        prefix = table.metadata["env_prefix"] or f"MIRROR_{table.name.upper()}_"
        for item in _leaves(type(getattr(defaults, table.name))):
            env = item.metadata["env"] or f"{prefix}{item.name.upper()}"
            pairs.append((env, f"{table.name}.{item.name}"))
    for ecosystem in ECOSYSTEMS:
        pairs.append((f"MIRROR_{ecosystem.upper()}_QUARANTINE", f"quarantine.{ecosystem}.age"))
    keys = dict(pairs)
    if len(keys) != len(pairs):
        raise AssertionError("two settings derive the same variable name")  # pragma: no cover
    return keys


# env variable -> dotted TOML key. Every setting is overridable.
ENV_KEYS: Mapping[str, str] = MappingProxyType(_env_keys())


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
    defaults = Config()
    tables = _sections(Config)
    _check_keys(raw, "", Config, {LISTEN_KEY, *(table.name for table in tables)})
    values = _read_leaves(Config, raw, "")
    if LISTEN_KEY in raw:
        values["host"], values["port"] = _listen(raw[LISTEN_KEY], LISTEN_KEY)
    for table in tables:
        values[table.name] = _build_table(getattr(defaults, table.name), raw, table.name)
    return replace(defaults, **values)


def _build_table(defaults: Any, raw: Mapping[str, Any], name: str) -> Any:
    """One `[name]` table over its defaults: its declared settings, then the table's own
    step (the sub-tables it reads itself, checks across its settings)."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table, got {table!r}")
    own_keys, finish = _TABLE_STEPS.get(type(defaults), (frozenset(), None))
    _check_keys(table, f"{name}.", type(defaults), own_keys)
    built = replace(defaults, **_read_leaves(type(defaults), table, f"{name}."))
    return finish(built, table) if finish is not None else built


def _read_leaves(cls: type, table: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        item.name: item.metadata["parse"](table[item.name], f"{prefix}{item.name}")
        for item in _leaves(cls)
        if item.name in table
    }


def _check_keys(table: Mapping[str, Any], prefix: str, cls: type, extra: Iterable[str]) -> None:
    """Refuse a key that no setting declares: a typo must not leave a default in force."""
    unknown = set(table) - {item.name for item in _leaves(cls)} - set(extra)
    if unknown:
        names = ", ".join(f"{prefix}{key}" for key in sorted(unknown))
        raise ConfigError(f"unknown setting(s): {names}")


def split_credentials(url: str) -> tuple[str, str | None]:
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


def _finish_ecosystem(ecosystem: EcosystemConfig, table: Mapping[str, Any]) -> EcosystemConfig:
    """Credentials written into the upstream URL move to `upstream_auth` (never both)."""
    if ecosystem.upstream is None:
        return ecosystem
    upstream, from_url = split_credentials(ecosystem.upstream)
    if from_url is None:
        return ecosystem
    if ecosystem.upstream_auth is not None:
        name = ecosystem.name
        raise ConfigError(
            f"{name}.upstream carries credentials and {name}.upstream_auth is set too: keep one"
        )
    return replace(ecosystem, upstream=upstream, upstream_auth=from_url)


def _finish_tls(tls: TLSConfig, table: Mapping[str, Any]) -> TLSConfig:
    if (tls.cert is None) != (tls.key is None):
        raise ConfigError("tls.cert and tls.key: set both or neither")
    return tls


def _finish_admin(admin: AdminConfig, table: Mapping[str, Any]) -> AdminConfig:
    """A name or a token both a write and a read-only token would make a login ambiguous."""
    for name in sorted(set(admin.tokens) & set(admin.read_tokens)):
        raise ConfigError(f"admin.read_tokens.{name}: {name} is an admin token's name too")
    for name, token in admin.read_tokens.items():
        if token in admin.tokens.values():
            raise ConfigError(f"admin.read_tokens.{name}: the same token is an admin token")
    return admin


def _finish_access(access: AccessConfig, table: Mapping[str, Any]) -> AccessConfig:
    """Required read tokens with none configured would refuse every read: a start-up error."""
    if access.required and not access.tokens:
        raise ConfigError(
            "access.required: no read token is configured, so every package read would be "
            "refused: set MIRROR_ACCESS_TOKENS (name:token,…) or access.tokens"
        )
    return access


def _finish_quarantine(quarantine: QuarantineConfig, table: Mapping[str, Any]) -> QuarantineConfig:
    """`[quarantine.<ecosystem>] age` and the `[[quarantine.rules]]` array."""
    per_ecosystem: dict[str, timedelta] = {}
    for ecosystem in ECOSYSTEMS:
        sub = table.get(ecosystem)
        if sub is None:
            continue
        key = f"quarantine.{ecosystem}"
        if not isinstance(sub, dict):
            raise ConfigError(f"{key}: expected a table with age, got {sub!r}")
        unknown = set(sub) - {"age"}
        if unknown:
            raise ConfigError(
                f"unknown setting(s): {', '.join(f'{key}.{k}' for k in sorted(unknown))}"
            )
        if "age" in sub:
            per_ecosystem[ecosystem] = parse_duration(sub["age"], key=f"{key}.age")
    rules_raw = table.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError(f"quarantine.rules: expected an array of tables, got {rules_raw!r}")
    rules = []
    for index, rule in enumerate(rules_raw):
        key = f"quarantine.rules[{index}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{key}: expected a table, got {rule!r}")
        unknown = set(rule) - {"ecosystem", "package", "age"}
        if unknown:
            raise ConfigError(
                f"unknown setting(s): {', '.join(f'{key}.{k}' for k in sorted(unknown))}"
            )
        ecosystem = _check_choice(str(rule.get("ecosystem", "")), f"{key}.ecosystem", ECOSYSTEMS)
        package = _str(rule.get("package"), f"{key}.package")
        if not _GLOB_NAME.fullmatch(package):
            raise ConfigError(f"{key}.package: not a package name or glob: {package!r}")
        if "age" not in rule:
            raise ConfigError(f"{key}.age: required")
        age = parse_duration(rule["age"], key=f"{key}.age")
        rules.append(QuarantineRule(ecosystem=ecosystem, package=package, age=age))
    return replace(quarantine, per_ecosystem=per_ecosystem, rules=tuple(rules))


def _finish_risk(risk: RiskConfig, table: Mapping[str, Any]) -> RiskConfig:
    """The `[[risk.rules]]` array: each rule's signal, ecosystem (one the signal occurs in, or
    `*`), package glob, action and (for `extend`, required) age."""
    rules_raw = table.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError(f"risk.rules: expected an array of tables, got {rules_raw!r}")
    rules = []
    for index, rule in enumerate(rules_raw):
        key = f"risk.rules[{index}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{key}: expected a table, got {rule!r}")
        unknown = set(rule) - {"signal", "ecosystem", "package", "action", "age"}
        if unknown:
            raise ConfigError(
                f"unknown setting(s): {', '.join(f'{key}.{k}' for k in sorted(unknown))}"
            )
        signal = _check_choice(str(rule.get("signal", "")), f"{key}.signal", tuple(RISK_SIGNALS))
        ecosystem = _check_choice(
            str(rule.get("ecosystem", "*")), f"{key}.ecosystem", ("*", *RISK_SIGNALS[signal])
        )
        package = _str(rule.get("package", "*"), f"{key}.package")
        if not _GLOB_NAME.fullmatch(package):
            raise ConfigError(f"{key}.package: not a package name or glob: {package!r}")
        action = cast(
            RiskAction, _check_choice(str(rule.get("action", "")), f"{key}.action", RISK_ACTIONS)
        )
        age = timedelta(0)
        if action == "extend":
            if "age" not in rule:
                raise ConfigError(f'{key}.age: required for action = "extend"')
            age = _positive(rule["age"], f"{key}.age")
        elif "age" in rule:
            raise ConfigError(f'{key}.age: only an "extend" rule has an age')
        rules.append(
            RiskRule(signal=signal, ecosystem=ecosystem, package=package, action=action, age=age)
        )
    return replace(risk, rules=tuple(rules))


# The tables with keys of their own beyond their declared settings, or checks across them.
_TABLE_STEPS: Mapping[type, tuple[frozenset[str], Callable[[Any, Mapping[str, Any]], Any]]] = (
    MappingProxyType(
        {
            QuarantineConfig: (frozenset({"rules", *ECOSYSTEMS}), _finish_quarantine),
            RiskConfig: (frozenset({"rules"}), _finish_risk),
            EcosystemConfig: (frozenset(), _finish_ecosystem),
            TLSConfig: (frozenset(), _finish_tls),
            AccessConfig: (frozenset(), _finish_access),
            AdminConfig: (frozenset(), _finish_admin),
        }
    )
)
