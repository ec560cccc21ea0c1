"""The pseudonymization key: where it comes from, and how domain keys derive from it.

Resolution order (the first that is set wins):

1. ``CRMSHIELD_PSEUDONYMIZATION_KEY``: hex-encoded key (at least 32 bytes),
   with ``CRMSHIELD_PSEUDONYMIZATION_KEY_VERSION`` (default 1);
2. ``CRMSHIELD_PSEUDONYMIZATION_KEY_FILE``: a JSON file ``{"version": N, "key": "<hex>"}``;
3. the Airflow connection ``crmshield_pseudonymization``: the key in its
   password field, the version in its extra (``{"key_version": N}``). Airflow
   reads it from ``AIRFLOW_CONN_CRMSHIELD_PSEUDONYMIZATION`` or a secrets backend.

The key is never logged, never written beside the data and never put on a
command line: the Spark job receives it through its environment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ENV_KEY = "CRMSHIELD_PSEUDONYMIZATION_KEY"
ENV_VERSION = "CRMSHIELD_PSEUDONYMIZATION_KEY_VERSION"
ENV_FILE = "CRMSHIELD_PSEUDONYMIZATION_KEY_FILE"
AIRFLOW_CONN_ID = "crmshield_pseudonymization"
MIN_KEY_BYTES = 32
DOMAINS = ("contact", "company", "deal", "ticket", "email", "phone")


class KeyError_(RuntimeError):
    """No usable key (never includes key material in its message)."""


@dataclass(frozen=True)
class PseudonymKey:
    """A master key and its version. ``repr`` never shows the key."""

    key: bytes
    version: int
    source: str

    def __repr__(self) -> str:
        return f"PseudonymKey(version={self.version}, source={self.source!r}, key=<redacted>)"

    def domain_key(self, domain: str) -> bytes:
        """A separate key per pseudonymization domain, so tokens of different
        domains cannot be linked: HMAC(master, "crmshield/pseudonym/" + domain)."""
        return hmac.new(self.key, f"crmshield/pseudonym/{domain}".encode(), hashlib.sha256).digest()

    def pseudonym(self, domain: str, value: str) -> str:
        """Reference implementation (the Spark job composes the same with built-ins)."""
        digest = hmac.new(self.domain_key(domain), value.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"v{self.version}_{digest}"


def _parse_hex(value: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        raise KeyError_(f"{where}: the pseudonymization key must be hex-encoded") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyError_(f"{where}: the pseudonymization key must be at least {MIN_KEY_BYTES} bytes")
    return key


def read_key_file(path: Path) -> PseudonymKey:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return PseudonymKey(_parse_hex(doc["key"], str(path)), int(doc.get("version", 1)), f"file:{path}")
    except FileNotFoundError:
        raise KeyError_(f"{path}: key file not found (set {ENV_FILE} or {ENV_KEY})") from None
    except (ValueError, KeyError, TypeError):
        raise KeyError_(f'{path}: expected JSON {{"version": N, "key": "<hex>"}}') from None


def _from_airflow() -> PseudonymKey | None:
    try:
        from airflow.sdk.bases.hook import BaseHook
    except Exception:  # pragma: no cover - Airflow is a dependency, but keep keys usable without it
        return None
    try:
        conn = BaseHook.get_connection(AIRFLOW_CONN_ID)
    except Exception:
        return None
    if not conn.password:
        return None
    extra = conn.extra_dejson or {}
    return PseudonymKey(
        _parse_hex(conn.password, f"Airflow connection {AIRFLOW_CONN_ID}"),
        int(extra.get("key_version", 1)),
        f"airflow:{AIRFLOW_CONN_ID}",
    )


def load_key(use_airflow: bool = True) -> PseudonymKey:
    """Resolve the key as documented above, or raise with what to set."""
    if os.environ.get(ENV_KEY):
        return PseudonymKey(_parse_hex(os.environ[ENV_KEY], ENV_KEY), int(os.environ.get(ENV_VERSION, "1")), "env")
    if os.environ.get(ENV_FILE):
        return read_key_file(Path(os.environ[ENV_FILE]))
    if use_airflow and (key := _from_airflow()) is not None:
        return key
    raise KeyError_(
        f"no pseudonymization key: set {ENV_KEY} (hex), {ENV_FILE} (JSON key file) "
        f"or the Airflow connection {AIRFLOW_CONN_ID}"
    )


def ensure_key_file(path: Path, version: int = 1) -> Path:
    """Create a random key file (mode 0600) if absent: the demo's local key.
    It must live outside the data zones."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": version, "key": secrets.token_hex(32)}, fh)
    return path


def spark_env(key: PseudonymKey) -> dict[str, str]:
    """Environment for the Spark job process (never its argv)."""
    return {ENV_KEY: key.key.hex(), ENV_VERSION: str(key.version)}
