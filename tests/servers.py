"""Run the real service under gunicorn for a test: ``with gunicorn_server(env) as base_url: ...``.

The server is ``python -m gunicorn -c gunicorn.conf.py wsgi:app`` started from
the repository root with ``APP_ENV=testing`` and the caller's ``env`` on top
(``env`` wins, so it may also set ``APP_ENV``). ``TestingConfig`` reads
``TEST_DATABASE_URL`` and ``TEST_REDIS_URL`` when a worker builds its app,
so pass them in ``env``: every worker is its own process, and the default
in-memory SQLite would give each one an empty database of its own. Use a
file (``sqlite:///{tmp_path}/db.sqlite``) or PostgreSQL.

The schema must exist before the server starts (nothing creates it on boot);
the caller makes it on the same URL, e.g.::

    app = create_app(make_config(SQLALCHEMY_DATABASE_URI=url))
    with app.app_context():
        db.create_all()

The server binds a free port on 127.0.0.1 (chosen here unless ``port`` is
given), and the context
manager yields its base URL once ``GET /healthz`` answers 200. If the server
exits or doesn't answer within ``startup_timeout`` seconds, ``ServerError``
is raised with its stderr. On exit the server gets SIGTERM (gunicorn's
graceful stop) and, if it is still running after ``stop_timeout``, SIGKILL
for its whole process group. Its stdout (access log) and stderr are files in
``log_dir`` (a temporary directory by default) and ``ServerLogs`` reads them.
"""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.fakes import free_port

ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    """The server did not start, or died."""


@dataclass(frozen=True)
class ServerLogs:
    """Where a server's output goes."""

    stdout: Path
    stderr: Path

    def read_stderr(self):
        """The server's stderr so far."""
        return self.stderr.read_text(errors="replace")

    def read_stdout(self):
        """The server's stdout (the JSON access lines) so far."""
        return self.stdout.read_text(errors="replace")


def server_env(env):
    """The server's environment: ours, ``APP_ENV=testing``, then ``env``."""
    merged = {**os.environ, "APP_ENV": "testing", **{key: str(value) for key, value in env.items()}}
    # Logs are read from files: no buffering, so a crash's last lines are there.
    merged["PYTHONUNBUFFERED"] = "1"
    return merged


def wait_until_up(process, logs, port, startup_timeout, ready_path="/healthz"):
    """Wait for ``ready_path`` to answer 200 on ``port``; return the base URL or raise ``ServerError``."""
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"gunicorn exited with {process.returncode}:\n{logs.read_stderr()}")
        base_url = f"http://127.0.0.1:{port}"
        try:
            with urllib.request.urlopen(f"{base_url}{ready_path}", timeout=2) as response:
                if response.status == 200:
                    return base_url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise ServerError(
        f"gunicorn did not answer {ready_path} within {startup_timeout} s:\n{logs.read_stderr()}"
    )


def stop(process, stop_timeout):
    """SIGTERM (graceful stop), then SIGKILL the process group if it is still there."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=stop_timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=stop_timeout)


@contextlib.contextmanager
def gunicorn_server(
    env,
    workers=1,
    port=None,
    *,
    app="wsgi:app",
    args=(),
    log_dir=None,
    ready_path="/healthz",
    startup_timeout=30.0,
    stop_timeout=15.0,
    on_start=None,
):
    """Start gunicorn with ``env`` and yield its base URL (``http://127.0.0.1:PORT``).

    ``workers=None`` leaves the count to ``gunicorn.conf.py`` (``WEB_CONCURRENCY``
    or 2 x cores + 1). ``app`` is the WSGI app to serve, ``args`` more gunicorn flags (they win
    over ``gunicorn.conf.py``), ``ready_path`` the page that must answer 200
    before the server counts as up, ``on_start(process, logs)`` is called once
    it is (to learn its pid or log files).
    """
    # A port chosen here, not 0: with reuse_port every worker binds the address itself.
    port = port or free_port()
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="allmine-gunicorn-"))
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        logs = ServerLogs(log_dir / "gunicorn.stdout.log", log_dir / "gunicorn.stderr.log")
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{port}",
            *(("--workers", str(workers)) if workers is not None else ()),
            *args,
            app,
        ]
        with open(logs.stdout, "wb") as stdout, open(logs.stderr, "wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=server_env(env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            base_url = wait_until_up(process, logs, port, startup_timeout, ready_path)
            if on_start is not None:
                on_start(process, logs)
            yield base_url
            if process.poll() is not None:
                raise ServerError(f"gunicorn died while in use ({process.returncode}):\n{logs.read_stderr()}")
        finally:
            stop(process, stop_timeout)
