"""Real-socket stand-ins for the delivery providers, shared by the whole test suite.

The senders are tested over real HTTP and SMTP connections on 127.0.0.1, not
with mocked clients, so a test sees exactly what would go on the wire:
``FakeGateway`` plays Twilio or Netgsm, ``FakeSmtpServer`` (aiosmtpd) plays
the mail relay, and ``make_certificate`` gives it a certificate the sender
can verify through ``SMTP_CA_FILE``. Everything here is a plain helper;
fixtures live in the test modules.
"""

import base64
import datetime
import email
import email.message
import email.policy
import ipaddress
import json
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from requests.structures import CaseInsensitiveDict

LOCALHOST = "127.0.0.1"


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on (a connection to it is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


# --- HTTP -----------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the gateway received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict
    body: bytes
    form: dict[str, str] | None = None
    json: Any = None

    @property
    def basic_auth(self):
        """``(user, password)`` from an ``Authorization: Basic`` header, else None."""
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(credentials).decode("utf-8").partition(":")
        return user, password


class _GatewayServer(ThreadingHTTPServer):
    """The HTTP server, quiet about clients that hung up (a timed-out sender does)."""

    def __init__(self, gateway):
        super().__init__((LOCALHOST, 0), _GatewayHandler)
        self.gateway = gateway

    def handle_error(self, request, client_address):
        """Ignore a client gone before the answer; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _GatewayHandler(BaseHTTPRequestHandler):
    """Records each request, waits the gateway's delay, answers its status and body."""

    def _handle(self):
        gateway = self.server.gateway
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        gateway.requests.append(_record(self.command, self.path, self.headers, body))
        # An Event, not sleep(): stopping the gateway cuts a long delay short.
        if gateway.delay:
            gateway.closing.wait(gateway.delay)
        if isinstance(gateway.body, str | bytes):
            payload = gateway.body.encode("utf-8") if isinstance(gateway.body, str) else gateway.body
            content_type = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(gateway.body).encode("utf-8")
            content_type = "application/json"
        self.send_response(gateway.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format, *args):
        """Keep the test output clean."""


def _record(method, raw_path, headers, body):
    """Parse a request into a ``RecordedRequest``, decoding form and JSON bodies."""
    url = urlsplit(raw_path)
    request = RecordedRequest(
        method=method,
        path=url.path,
        query=dict(parse_qsl(url.query, keep_blank_values=True)),
        headers=CaseInsensitiveDict(headers.items()),
        body=body,
    )
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        request.form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    elif content_type == "application/json":
        request.json = json.loads(body)
    return request


class FakeGateway:
    """A real HTTP server on 127.0.0.1 that records requests and answers what the test set.

    ``status`` (int), ``body`` (JSON-able value, or str/bytes sent as plain
    text) and ``delay`` (seconds before answering) may be changed at any
    time; every request lands in ``requests`` as a ``RecordedRequest``.
    """

    def __init__(self, status=200, body=None, delay=0.0):
        self.status = status
        self.body = {} if body is None else body
        self.delay = delay
        self.requests = []
        self.closing = threading.Event()
        self._server = None
        self._thread = None

    @property
    def url(self):
        """``http://127.0.0.1:PORT``, the base URL to configure a sender with."""
        return f"http://{LOCALHOST}:{self._server.server_address[1]}"

    def respond(self, status, body=None, delay=0.0):
        """Set the answer for the next requests in one call."""
        self.status, self.body, self.delay = status, {} if body is None else body, delay

    def start(self):
        """Listen on a free port and serve from a daemon thread."""
        self._server = _GatewayServer(self)
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving, cut pending delays short and close the socket."""
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


# --- TLS ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files of a throw-away certificate authority and a server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self):
        """An ``ssl.SSLContext`` for a server presenting the certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(directory, hostnames=("localhost", LOCALHOST)):
    """Write a self-signed CA and a server certificate for ``hostnames`` under ``directory``.

    A separate CA (rather than one self-signed leaf) passes OpenSSL's strict
    chain checks, which newer Pythons turn on in ``create_default_context``.
    """
    directory = Path(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "allmine test CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names = [_alt_name(name) for name in hostnames]
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    cert = (
        _builder(server_name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = CertificateFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


def _builder(subject, issuer, public_key, now):
    """A certificate builder valid from an hour ago for a day."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _key_usage(cert_sign):
    """Key usage for a CA (signs certificates) or a TLS server (signs handshakes)."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_name(name):
    """A subjectAltName entry: an IP address when ``name`` parses as one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


# --- SMTP -----------------------------------------------------------------------------------------


@dataclass
class ReceivedMessage:
    """One message the SMTP server accepted: ``raw`` as it arrived, ``message`` parsed with "\n" lines."""

    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    raw: bytes
    tls: bool
    login: str | None = None


class _SmtpHandler:
    """aiosmtpd handler: enforces login, applies the configured refusals, keeps what it accepts."""

    def __init__(self, server, implicit_tls):
        self.server = server
        self.implicit_tls = implicit_tls

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        """Refuse senders that did not log in when the server has users."""
        if self.server.users and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Accept the recipient unless the test set ``reject_rcpt``."""
        if self.server.reject_rcpt:
            return self.server.reject_rcpt
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        """Keep the parsed message unless the test set ``reject_data``."""
        if self.server.reject_data:
            return self.server.reject_data
        raw = envelope.original_content or envelope.content
        self.server.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                # SMTP ends lines with CRLF; Python strings end them with "\n".
                message=email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default),
                raw=raw,
                tls=self.implicit_tls or session.ssl is not None,
                login=session.auth_data if session.authenticated else None,
            )
        )
        return "250 OK"


class FakeSmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives.

    ``tls`` is None (plain), ``"starttls"`` (STARTTLS offered and required
    before MAIL) or ``"ssl"`` (implicit TLS); both need ``certificate`` from
    ``make_certificate``. ``users`` ({login: password}) turns on AUTH and
    requires it before MAIL; aiosmtpd only offers AUTH over TLS unless
    ``auth_require_tls`` is False (by default it is True except in ``"ssl"``
    mode, where aiosmtpd cannot see the TLS layer). Set ``reject_rcpt`` or
    ``reject_data`` to an SMTP reply such as ``"550 5.7.1 rejected"`` to
    refuse. Accepted mail lands in ``messages`` as ``ReceivedMessage``.
    """

    def __init__(self, *, tls=None, certificate=None, users=None, auth_require_tls=None):
        if tls not in (None, "starttls", "ssl"):
            raise ValueError(f"tls must be None, 'starttls' or 'ssl', got {tls!r}")
        if tls and certificate is None:
            raise ValueError("a TLS server needs a certificate from make_certificate()")
        self.tls = tls
        self.certificate = certificate
        self.users = dict(users or {})
        self.auth_require_tls = tls != "ssl" if auth_require_tls is None else auth_require_tls
        self.reject_rcpt = None
        self.reject_data = None
        self.messages = []
        self.host = LOCALHOST
        self.port = None
        self._controller = None

    @property
    def ca_file(self):
        """The CA file that verifies the server's certificate (for ``SMTP_CA_FILE``), or None."""
        return str(self.certificate.ca_file) if self.certificate else None

    def smtp_config(self):
        """The ``SMTP_*`` settings that point a sender at this server."""
        return {
            "SMTP_HOST": self.host,
            "SMTP_PORT": self.port,
            "SMTP_SECURITY": self.tls or "none",
            "SMTP_CA_FILE": self.ca_file,
        }

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        """aiosmtpd authenticator: LOGIN/PLAIN against ``users``."""
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode("utf-8"), auth_data.password.decode("utf-8")
            if login in self.users and self.users[login] == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    def start(self):
        """Start the server on a free port (retrying if another process grabs it first)."""
        context = self.certificate.server_context() if self.tls else None
        options = {"server_hostname": "localhost", "auth_require_tls": self.auth_require_tls}
        if self.tls == "ssl":
            options["ssl_context"] = context
        elif self.tls == "starttls":
            options.update(tls_context=context, require_starttls=True)
        if self.users:
            options["authenticator"] = self._authenticate
        handler = _SmtpHandler(self, implicit_tls=self.tls == "ssl")
        for attempt in range(3):
            port = free_port()
            controller = Controller(handler, hostname=LOCALHOST, port=port, **options)
            try:
                controller.start()
            except OSError:
                controller.loop.close()
                if attempt == 2:
                    raise
                continue
            self.port, self._controller = port, controller
            return self

    def stop(self):
        """Stop the server and its event loop thread."""
        self._controller.stop()
        self._controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
