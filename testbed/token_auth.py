"""A registry with token auth, as GHCR does it: distribution 2.8 (`auth: token`) plus a small
token issuer on loopback that hands out JWTs for a username and password.

The flow it stands in for: the registry answers 401 with `WWW-Authenticate: Bearer
realm="http://127.0.0.1:P/token",service="...",scope="repository:<repo>:pull"`; the client GETs
the realm with `service` and `scope` (Basic credentials), gets `{"token": ..., "access_token":
...}`, and retries with `Authorization: Bearer <token>`.

Distribution 2.x verifies a token with the keys of the certificates in `rootcertbundle`: the
JWT header names the key by `kid`, the libtrust key ID of the public key (SHA-256 of its DER
SubjectPublicKeyInfo, first 30 bytes, base32, in groups of four joined by `:`). Tokens here
are RS256. Wrong credentials get a 401 from the issuer; anonymous requests get a token with no
access (as GHCR does for a private repository), which the registry then refuses.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from testbed.procs import Daemon, free_port

SERVICE = "ue-token-registry"
ISSUER = "ue-token-issuer"
TOKEN_TTL_S = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The key ID distribution 2.x looks a JWT's `kid` up by."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass
class SigningKey:
    """An RSA key and its self-signed certificate (the registry's rootcertbundle)."""

    key: rsa.RSAPrivateKey
    certificate_pem: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert.public_bytes(serialization.Encoding.PEM))

    @property
    def key_id(self) -> str:
        return libtrust_key_id(self.key.public_key())

    def jwt(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": self.key_id}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(signature)


@dataclass(frozen=True)
class TokenRequest:
    """One request the issuer answered (for tests to look at)."""

    service: str
    scopes: tuple[str, ...]
    account: str | None  # the Basic username, None when anonymous
    status: int


@dataclass
class TokenIssuer:
    """The token endpoint (`GET /token`), on 127.0.0.1, in a thread of the test process."""

    username: str
    password: str = field(repr=False)
    key: SigningKey = field(default_factory=SigningKey.generate)
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list, repr=False)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the token issuer is not started")
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = issuer.answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="ue-token-issuer"')
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests look at issuer.requests

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(self, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for a token request."""
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        service = (query.get("service") or [""])[0]
        scopes = tuple(scope for value in query.get("scope", []) for scope in value.split(" "))
        account = self._account(authorization)
        if parts.path != "/token" or service != SERVICE:
            self.requests.append(TokenRequest(service, scopes, account, 400))
            return 400, {"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]}
        if account == "":  # credentials given, and wrong
            self.requests.append(TokenRequest(service, scopes, None, 401))
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        access = []
        if account is not None:
            for scope in scopes:
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind == "repository" and name:
                    allowed = [a for a in actions.split(",") if a in ("pull", "push")]
                    access.append({"type": "repository", "name": name, "actions": allowed})
        now = int(time.time())
        token = self.key.jwt(
            {
                "iss": ISSUER,
                "sub": account or "",
                "aud": SERVICE,
                "exp": now + TOKEN_TTL_S,
                "nbf": now - 10,
                "iat": now,
                "jti": secrets.token_hex(8),
                "access": access,
            }
        )
        self.issued.append(token)
        self.requests.append(TokenRequest(service, scopes, account, 200))
        return 200, {"token": token, "access_token": token, "expires_in": TOKEN_TTL_S}

    def _account(self, authorization: str) -> str | None:
        """The username for right credentials, "" for wrong ones, None for none."""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return ""
        ok = secrets.compare_digest(user, self.username) and secrets.compare_digest(
            password, self.password
        )
        return user if ok else ""


class TokenRegistry(Daemon):
    """`docker-registry serve` with `auth: token` pointing at a TokenIssuer, on 127.0.0.1;
    ready once GET /v2/ answers 401 with a Bearer challenge. `start()` waits for it."""

    name = "docker-registry (token auth)"

    def __init__(self, root: Path, issuer: TokenIssuer) -> None:
        super().__init__(root / "registry.log")
        self.root = root
        self.issuer = issuer
        self.port = free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, timeout: float | None = None) -> None:
        super().start(timeout=timeout)
        self.wait()

    def command(self) -> tuple[list[str], dict[str, str], None]:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        bundle = self.root / "rootcerts.pem"
        bundle.write_bytes(self.issuer.key.certificate_pem)
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": str(data)}, "delete": {"enabled": True}},
            "http": {"addr": self.address, "secret": secrets.token_hex(16)},
            "auth": {
                "token": {
                    "realm": self.issuer.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(bundle),
                }
            },
        }
        path = self.root / "config.yml"
        path.write_text(json.dumps(config, indent=2) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        return ["docker-registry", "serve", str(path)], env, None

    def ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0)
        try:
            conn.request("GET", "/v2/")
            response = conn.getresponse()
            return response.status == 401 and "Bearer" in (
                response.getheader("WWW-Authenticate") or ""
            )
        finally:
            conn.close()
