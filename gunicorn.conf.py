"""gunicorn settings for the service: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value can be overridden without editing this file: ``WEB_CONCURRENCY``,
``GUNICORN_BIND`` (or ``PORT``) and ``PROMETHEUS_MULTIPROC_DIR`` here, and any
other setting through ``GUNICORN_CMD_ARGS`` (``"--threads 8 --keep-alive 65"``)
or command-line flags, which win over this file.
"""

import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time

from gunicorn import glogging

PORT = os.environ.get("PORT", "5000")
bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{PORT}")

# Workers: the classic 2 x cores + 1, capped so a big host doesn't start dozens of ~60 MB processes
# that all hold database connections (each worker has its own SQLAlchemy pool).
MAX_WORKERS = 12
workers = int(os.environ.get("WEB_CONCURRENCY") or min(2 * multiprocessing.cpu_count() + 1, MAX_WORKERS))

# gthread, not sync. The database and Redis calls are short, but send-otp waits on the SMS or email
# provider (up to NOTIFY_TIMEOUT, 10 s): a sync worker would be blocked for that whole time, so a slow
# provider could take every worker out. With a few threads per worker the other requests go on while
# one waits (the GIL is released during the I/O). gthread also keeps client connections alive, where
# sync closes each one after one request, and parks idle keep-alive connections in its poller
# instead of tying up a thread. More threads don't add CPU throughput (the GIL), so keep them few.
worker_class = "gthread"
threads = 4

# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads new connections over them.
# With one shared socket, whichever worker wakes first accepts a whole burst of connections, and with
# keep-alive they stay there: a load balancer's or a benchmark's few long-lived connections then pile
# onto one worker, which the GIL holds to one core (seen in `make bench`: half the machine idle, the
# throughput halved). The cost: a worker that exits (max_requests, a crash) drops the connections still
# waiting in its own accept queue, unless the kernel migrates them (Linux >= 5.14:
# `sysctl net.ipv4.tcp_migrate_req=1`). It only works for TCP addresses with a fixed port: on a Unix
# socket each worker would replace the last one's file, on port 0 each would get its own port, and
# sockets handed over by systemd would be ignored. `on_starting` turns it off for those binds.
reuse_port = True

# A request may wait up to NOTIFY_TIMEOUT on a provider, so 30 s leaves ample room before the
# arbiter kills a stuck worker. On SIGTERM, in-flight requests get graceful_timeout to finish: keep it
# below the orchestrator's kill deadline (Kubernetes' terminationGracePeriodSeconds is 30 by default).
timeout = 30
graceful_timeout = 25
# Seconds an idle keep-alive connection stays open. Behind a load balancer, set it above the
# balancer's idle timeout (AWS ALB: 60 -> "--keep-alive 65"), else the balancer may reuse a
# connection gunicorn is closing and answer 502.
keepalive = 5

# Restart each worker after about 100,000 requests, jittered so the workers don't all restart at once:
# a bound on any slow leak (at a few hundred requests/s per worker, one restart every few minutes to
# a quarter hour). Not much lower: keep-alive connections stick to a worker, so a busy one would
# restart every few seconds, and under PROMETHEUS_MULTIPROC_DIR each worker that ever ran leaves
# its counter files behind (that is how totals survive restarts) for every scrape to read.
max_requests = 100000
max_requests_jitter = 10000

# preload_app stays False: each worker imports the app after the fork, so every worker opens its own
# SQLAlchemy engine pool, Redis connections and HTTP sessions to the SMS/email providers. With
# preload, the arbiter would build them before forking and the workers would inherit the same
# sockets: two processes writing to one PostgreSQL connection corrupt its protocol stream. (An
# engine can be made fork-safe with engine.dispose(close=False) in post_fork, but nothing is lost
# here without preload except the copy-on-write memory sharing, and a start-up error still stops
# the arbiter, since every worker fails to boot.) It also lets prometheus_client pick its
# per-worker files by pid, which it does when the metrics are created.
preload_app = False

# gunicorn >= 25.1 opens a control socket at one fixed path per user ($HOME/.gunicorn/gunicorn.ctl):
# a second instance on the host (blue/green, tests, the benchmark) would take it over. Nothing here
# uses gunicornc; signals (HUP, TTIN/TTOU, TERM) still manage the arbiter. Older versions ignore this.
control_socket_disable = True

# The heartbeat file lives in memory: on a container's overlay disk a slow write can get a
# healthy worker killed as unresponsive.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# Header limits: nginx in front (deploy/nginx.conf) must be the stricter one, so that whatever it lets
# through is parsed here and answered by the service with its envelope, not refused by gunicorn with
# an HTML page. nginx holds a request line or a header line to 4 KB (with its CRLF: gunicorn's
# 4094-byte request line is exactly that) and all the headers to 1 KB + 4 x 4 KB, which is up to
# 17408 / 4 = 4352 header lines of the shortest kind ("a:" CRLF), where gunicorn's default is 100.
# gunicorn is not meant to face clients directly: nginx bounds the headers' bytes, not this count.
limit_request_line = 4094
limit_request_fields = 4400
limit_request_field_size = 8190

# Logs: errors to stderr, access lines to stdout, each access line one JSON object (see JsonAccessLogger).
errorlog = "-"
accesslog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Prometheus multiprocess mode: the workers write their values to files in this directory and
# /metrics adds them up. It must be in the environment before a worker imports prometheus_client.
# A directory we make ourselves is removed at exit; either way it is emptied at start-up, or the
# previous run's counts would be added to this one's.
# (A HUP re-reads this file; the marker variable remembers that the directory is ours.)
CREATED_DIR_MARKER = "ALLMINE_AUTH_CREATED_METRICS_DIR"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="allmine-auth-metrics-")
    os.environ[CREATED_DIR_MARKER] = os.environ["PROMETHEUS_MULTIPROC_DIR"]


# Query parameters whose values are logged (when they look like a plain word); every other value is
# replaced with REDACTED: a client may put a token or a code in a URL (?access_token=, ?code=), and
# log lines are read by more people, and kept longer, than the database.
LOGGED_QUERY_VALUES = frozenset({"scope"})
LOGGED_QUERY_VALUE = re.compile(r"[a-z]{1,16}")
# A parameter name is logged when it looks like one; a part without "=" is all value (``?<token>``),
# and so is a long or odd "name" (a token sent as ``?<token>=``).
LOGGED_QUERY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
REDACTED = "[redacted]"


def redacted_query(query):
    """The query string for the access log: parameter names kept, values redacted (``None`` if empty)."""
    if not query:
        return None
    parts = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        if not equals or not LOGGED_QUERY_NAME.fullmatch(name):
            parts.append(REDACTED)
        elif not value or (name in LOGGED_QUERY_VALUES and LOGGED_QUERY_VALUE.fullmatch(value)):
            parts.append(part)
        else:
            parts.append(f"{name}={REDACTED}")
    return "&".join(parts)


def redacted_uri(uri):
    """A request URI for a log line: its path masked, its query string's values redacted."""
    path, question_mark, query = uri.partition("?")
    return masked(path) + question_mark + (redacted_query(query) or "")


def masked(text):
    """``text`` (a path, a User-Agent) with phone numbers, email addresses and tokens masked, as in the app.

    Imported here, not at the top: the master reads this file before it sets
    ``PROMETHEUS_MULTIPROC_DIR``, and the app's package must not be imported before that.
    """
    from allmine_auth.privacy import mask_text

    return mask_text(text) if text else text


class JsonAccessLogger(glogging.Logger):
    """gunicorn's logger, writing each access line as one JSON object with the request id.

    ``access_log_format`` can't do this safely: gunicorn pastes the atoms in
    without escaping, so a quote in a User-Agent or URL would break the line.
    The request id is the ``X-Request-ID`` response header the app sets; the
    query string is logged with its values redacted (``redacted_query``).
    """

    def exception(self, msg, *args, **kwargs):
        """Log an error with its traceback; gunicorn's "Error handling request <uri>" with a redacted URI."""
        if isinstance(msg, str) and msg.startswith("Error handling request"):
            args = tuple(redacted_uri(arg) if isinstance(arg, str) else arg for arg in args)
        super().exception(msg, *args, **kwargs)

    def access(self, resp, req, environ, request_time):
        """Log one request as a JSON line."""
        if not getattr(self, "access_log_enabled", True):  # older gunicorn lacks the property
            return
        request_id = "-"
        for name, value in resp.headers:
            if name.lower() == "x-request-id":
                request_id = value
                break
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        now = time.time()
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "level": "INFO",
            "logger": "gunicorn.access",
            "request_id": request_id,
            "remote_addr": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD"),
            "path": masked(environ.get("PATH_INFO")),
            "query": redacted_query(environ.get("QUERY_STRING")),
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "user_agent": masked(environ.get("HTTP_USER_AGENT")),
            "pid": os.getpid(),
        }
        try:
            self.access_log.info(json.dumps(entry, ensure_ascii=False))
        except Exception:  # noqa: BLE001  (a bad log line must never fail the request)
            self.exception("could not write the access log line")


logger_class = JsonAccessLogger


def on_starting(server):
    """Refuse unsafe settings before any worker starts; empty the metrics directory of a previous run."""
    from config import refuse_unsafe_settings

    refuse_unsafe_settings()
    keep_reuse_port_where_it_works(server)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))


def keep_reuse_port_where_it_works(server):
    """Turn ``reuse_port`` off unless every bind is TCP with a fixed port and no sockets are inherited.

    Runs before the arbiter creates its sockets, with the final settings (command-line ``--bind``
    included), so one shared socket is made as usual where per-worker sockets can't work.
    """
    if not server.cfg.reuse_port:
        return
    tcp = all(isinstance(address, tuple) and address[1] for address in server.cfg.address)
    if tcp and not os.environ.get("LISTEN_FDS"):
        server.log.info("each worker listens on its own SO_REUSEPORT socket")
        return
    server.cfg.set("reuse_port", False)
    server.log.info("reuse_port off: a bind is not TCP with a fixed port, or sockets come from systemd")


def child_exit(server, worker):
    """Tell prometheus_client a worker is gone (its live gauges are dropped, its counters kept)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory if this configuration made it."""
    created = os.environ.get(CREATED_DIR_MARKER)
    if created and created == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(created, ignore_errors=True)
