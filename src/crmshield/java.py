"""Java check: Spark needs a JVM (17 or newer). Fail with advice, not a stack trace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

MIN_JAVA = 17
INSTALL_HINT = (
    "Spark needs Java 17 or newer. Install it, then re-run:\n"
    "  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless\n"
    "  Fedora/RHEL:   sudo dnf install -y java-17-openjdk-headless\n"
    "  macOS:         brew install openjdk@17\n"
    "or point JAVA_HOME at an existing JDK/JRE 17+."
)


class JavaMissing(RuntimeError):
    """No usable Java runtime."""


def java_executable() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_version() -> int:
    """The major version of the Java runtime Spark will use; raise JavaMissing with advice."""
    exe = java_executable()
    if not exe:
        raise JavaMissing("Java was not found (no JAVA_HOME, no `java` on PATH).\n" + INSTALL_HINT)
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JavaMissing(f"`{exe} -version` failed: {exc}.\n" + INSTALL_HINT) from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise JavaMissing(f"could not read the Java version from `{exe} -version`.\n" + INSTALL_HINT)
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0" style
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise JavaMissing(f"Java {major} found at {exe}; Spark 4 needs {MIN_JAVA}+.\n" + INSTALL_HINT)
    return major


if __name__ == "__main__":  # `python -m crmshield.java`: the bootstrap's check
    import sys

    try:
        print(f"java {java_version()} ok", file=sys.stderr)
    except JavaMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
