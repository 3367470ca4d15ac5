"""A real Label Studio server for tests: installed once into .venv-labelstudio/, started on 127.0.0.1.

`prepare_in_background()` (called by the root conftest when Label Studio tests are collected)
installs the pinned server into its own virtual environment with uv (it pins Django, pandas,
boto3 ... that would clash with ours) and starts it while the other tests run; `server()` waits
for it. The very first start migrates an empty database (minutes); that migrated data directory
is kept as a template in the machine's cache, and every later session starts on a copy of it
(seconds). The
server runs with a fixed legacy token, no analytics, no version check, no Sentry, signup closed,
and SSRF protection off so it may reach the loopback S3 emulation and webhook receiver of the
tests. It is stopped by its PID at the end of the session.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

VERSION = "1.23.2"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-labelstudio"
#: Every distribution of the server's environment pinned (pip freeze of a resolved install): installing
#: it with --no-deps skips pip's dependency resolution, which alone took ~20 min on a loaded machine.
LOCK = Path(__file__).with_name("requirements.lock")
STAMP = VENV / f".installed-label-studio-{VERSION}"
DATABASE = "label_studio.sqlite3"
TOKEN = "labelloop-test-token-0123456789"
USERNAME = "reviewer@labelloop.test"
PASSWORD = "labelloop-test-password"


def _template_dir() -> Path:
    """Where the migrated data directory is kept: the machine's cache, keyed by all it depends on.

    It outlives a checkout (like pip's and uv's caches), so a fresh clone on the same machine, e.g.
    CI right after a session, skips the migrations; any change of version, lock or user makes a new one.
    """
    key = hashlib.sha256("\n".join((VERSION, LOCK.read_text(), USERNAME, PASSWORD, TOKEN)).encode()).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "labelloop" / f"label-studio-{VERSION}-{key[:16]}"


#: A data directory migrated once: a copy starts in seconds instead of minutes.
TEMPLATE = _template_dir()
INSTALL_TIMEOUT = 1200.0
START_TIMEOUT = 420.0
#: Variables Label Studio reads under bare names; a developer's shell must not steer the child.
_BARE = ("HOST", "PORT", "USERNAME", "PASSWORD", "LABEL_STUDIO_HOST", "LABEL_STUDIO_PORT")


def _log(text: str) -> None:
    print(f"[label-studio] {text}", file=sys.stderr, flush=True)


def _installed() -> Path:
    """The ``label-studio`` executable of the pinned install (installs it once; call under `_locked`)."""
    executable = VENV / "bin" / "label-studio"
    if not (STAMP.exists() and executable.exists()):
        _install()
    return executable


@contextmanager
def _locked() -> Iterator[None]:
    """An exclusive lock on the install and the template (pytest processes of one checkout share them)."""
    with open(ROOT / ".venv-labelstudio.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def save_template(data_dir: Path) -> None:
    """Keep a just-started server's migrated data directory as the template (a consistent SQLite copy).

    Called while that server runs idle, before any test touched it: the online backup API copies
    the database consistently, so the first session needs no second start to make the template.
    """
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMPLATE.name}.partial-", dir=TEMPLATE.parent))
    shutil.copytree(data_dir, staging, ignore=shutil.ignore_patterns(f"{DATABASE}*"), dirs_exist_ok=True)
    with closing(sqlite3.connect(data_dir / DATABASE)) as source, closing(sqlite3.connect(staging / DATABASE)) as copy:
        source.backup(copy)
    (staging / ".complete").write_text(VERSION)
    if TEMPLATE.exists() and not (TEMPLATE / ".complete").exists():
        shutil.rmtree(TEMPLATE, ignore_errors=True)
    try:
        staging.rename(TEMPLATE)  # atomic: a template either is complete or is not there
    except OSError:  # another checkout on this machine made it meanwhile: keep theirs
        shutil.rmtree(staging, ignore_errors=True)


def _install() -> None:
    """A fresh virtual environment with every pinned distribution, no dependency resolution.

    uv (installed by ``make setup``) downloads in parallel and skips byte-compiling (the server
    writes the bytecode of what it imports on its first start): about a minute where pip took
    several. pip is the fallback when uv is not there.
    """
    started = time.monotonic()
    uv = importlib.util.find_spec("uv") is not None
    _log(f"installing label-studio=={VERSION} into {VENV} with {'uv' if uv else 'pip'} (once)")
    shutil.rmtree(VENV / "lib", ignore_errors=True)  # a half-finished earlier install
    venv = [sys.executable, "-m", "venv", *(["--without-pip"] if uv else []), str(VENV)]
    subprocess.run(venv, check=True)
    python = str(VENV / "bin" / "python")
    if uv:
        command = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--no-deps", "--python", python]
    else:
        command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    subprocess.run([*command, "-r", str(LOCK)], check=True, timeout=INSTALL_TIMEOUT)
    STAMP.write_text(f"label-studio=={VERSION}\n")
    _log(f"installed in {time.monotonic() - started:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_environment(data_dir: Path) -> dict[str, str]:
    # Bytecode is written on the first start (the install does not compile), later starts reuse it.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _BARE and not k.startswith("AWS_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": USERNAME,
            "LABEL_STUDIO_PASSWORD": PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": TOKEN,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            # Tests only: the S3 emulation and the webhook receiver listen on loopback.
            "SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class Server:
    """One running server: its URL, token, PID and data directory (restartable on the same data)."""

    executable: Path
    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="label-studio-", suffix=".log")[1]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return TOKEN

    def start(self) -> None:
        self.port = self.port or free_port()
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.executable), "start", "--no-browser", "--internal-host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "WARNING"],
                env=child_environment(self.data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self._wait_ready(started)

    def _wait_ready(self, started: float) -> None:
        assert self.process is not None
        while time.monotonic() - started < START_TIMEOUT:
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.process.returncode}; log: {self.tail()}")
            if self._answers():
                _log(f"ready at {self.url} (pid {self.process.pid}) after {time.monotonic() - started:.0f} s")
                return
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"Label Studio not ready after {START_TIMEOUT:.0f} s; log: {self.tail()}")

    def _answers(self) -> bool:
        """/health answers AND our token works (a busy port makes Label Studio silently move elsewhere)."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                if response.status != 200:
                    return False
            request = urllib.request.Request(f"{self.url}/api/current-user/whoami")
            request.add_header("Authorization", f"Token {TOKEN}")
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server by its PID (its process group: the server's own children go with it)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


class _Preparation:
    """Install + start in a background thread, once per session; `server()` joins it."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.result: Server | None = None
        self.error: BaseException | None = None
        self.data_dir: Path | None = None
        self.lock = threading.Lock()

    def _run(self) -> None:
        try:
            self.data_dir = Path(tempfile.mkdtemp(prefix="labelloop-ls-data-"))
            with _locked():
                executable = _installed()
                self.result = Server(executable, self.data_dir)
                if not (TEMPLATE / ".complete").exists():
                    # First start on an empty directory: migrations (minutes). Its result becomes the template.
                    _log("first start: migrating the database once; later sessions copy the result")
                    self.result.start()
                    save_template(self.data_dir)
                    return
            shutil.copytree(TEMPLATE, self.data_dir, dirs_exist_ok=True)
            self.result.start()
        except BaseException as exc:
            self.error = exc

    def begin(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="label-studio-prepare", daemon=True)
                self.thread.start()

    def wait(self) -> Server:
        self.begin()
        assert self.thread is not None
        self.thread.join(INSTALL_TIMEOUT + START_TIMEOUT)
        if self.error is not None:
            raise RuntimeError(f"Label Studio could not be prepared: {self.error}") from self.error
        if self.result is None or self.result.process is None:
            raise RuntimeError("Label Studio is not running")
        return self.result

    def shutdown(self) -> None:
        if self.thread is not None:
            self.thread.join(INSTALL_TIMEOUT + START_TIMEOUT)
        if self.result is not None:
            self.result.stop()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


_PREPARATION = _Preparation()


def prepare_in_background() -> None:
    _PREPARATION.begin()


def server() -> Server:
    return _PREPARATION.wait()


def shutdown() -> None:
    _PREPARATION.shutdown()
