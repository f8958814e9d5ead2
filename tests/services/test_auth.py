"""services/auth.py and the JWT part of services/settings.py: real keys made with cryptography,
real PyJWT, and a real JWKS endpoint served by http.server on loopback."""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from events.room import Role
from services.auth import JwksKeys, TokenVerifier, verifier_from_settings
from services.errors import (
    AccessDenied,
    AuthError,
    IssuerUnavailable,
    SettingsError,
    TokenRefused,
    answer_for,
)
from services.redis_server import free_loopback_port
from services.settings import Settings

SECRET = "test-secret-of-at-least-32-bytes!"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for room-1, with ``changes`` applied; a change to None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "agent-1",
        "name": "Agent 1",
        "room": "room-1",
        "role": "agent",
        "whisper": False,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "aud": "earpiece",
        "iss": "https://id.example.com/",
    }
    return {k: v for k, v in (base | changes).items() if v is not None}


def sign(key: PrivateKey, algorithm: str, kid: str | None = None, **changes: Any) -> str:
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(claims(**changes), key, algorithm=algorithm, headers=headers)


def forge(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A token PyJWT would refuse to make: unsigned, or HMAC-signed with a public key."""

    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        f"{segment(json.dumps(header).encode())}.{segment(json.dumps(payload).encode())}"
    )
    signature = b"" if hmac_key is None else hmac.digest(hmac_key, signing_input.encode(), "sha256")
    return f"{signing_input}.{segment(signature)}"


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        public = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return public | {"kid": kid, "use": "sig"}


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def rsa_key_2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(params=["RS256", "ES256", "EdDSA"])
def signer(
    request: pytest.FixtureRequest,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> tuple[str, PrivateKey]:
    """Each asymmetric algorithm with a private key of its kind."""
    keys: dict[str, PrivateKey] = {"RS256": rsa_key, "ES256": ec_key, "EdDSA": ed_key}
    return request.param, keys[request.param]


class JwksServer:
    """A JWK Set served by http.server on 127.0.0.1; ``keys`` and ``body`` may change meanwhile."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.body: bytes | None = None
        self.requests = 0
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests += 1
                body = served.body or json.dumps({"keys": served.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def jwks(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> Iterator[JwksServer]:
    server = JwksServer()
    server.keys = [jwk(rsa_key, "rsa-1"), jwk(ed_key, "ed-1")]
    yield server
    server.stop()


def jwks_verifier(url: str, *, cooldown_s: float = 30) -> TokenVerifier:
    return TokenVerifier(
        JwksKeys(url, cooldown_s=cooldown_s),
        audience="earpiece",
        issuer="https://id.example.com/",
        algorithms=("RS256", "EdDSA"),
    )


def key_verifier(
    key: rsa.RSAPrivateKey, *algorithms: str, resume_key: str | None = None
) -> TokenVerifier:
    """A verifier of the issuer's public key for ``algorithms`` (RS256 by default)."""
    return TokenVerifier(
        key.public_key(),
        audience="earpiece",
        issuer="https://id.example.com/",
        algorithms=algorithms or ("RS256",),
        resume_key=resume_key,
    )


def secret_verifier(leeway_s: float = 0) -> TokenVerifier:
    return TokenVerifier(
        SECRET, audience="earpiece", issuer="https://id.example.com/", leeway_s=leeway_s
    )


# Settings


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"EARPIECE_JWT_ALGORITHMS": "none"}, "EARPIECE_JWT_ALGORITHMS: 'none' would accept"),
        ({"EARPIECE_JWT_ALGORITHMS": "HS256,None"}, "EARPIECE_JWT_ALGORITHMS: 'none' would accept"),
        ({"EARPIECE_JWT_ALGORITHMS": " , "}, "EARPIECE_JWT_ALGORITHMS: name at least one"),
        ({"EARPIECE_JWT_ALGORITHMS": "RS512"}, r"EARPIECE_JWT_ALGORITHMS: unsupported \['RS512'\]"),
        (
            {"EARPIECE_JWT_ALGORITHMS": "HS256,RS256", "EARPIECE_JWT_JWKS_URL": "https://id/jwks"},
            r"EARPIECE_JWT_ALGORITHMS: mixes .* \(algorithm confusion\)",
        ),
        (
            {"EARPIECE_JWT_ALGORITHMS": "RS256"},
            "EARPIECE_JWT_PUBLIC_KEY: .* need the issuer's public key",
        ),
        (
            {"EARPIECE_JWT_JWKS_URL": "https://id.example.com/jwks"},
            r"EARPIECE_JWT_ALGORITHMS: \['HS256'\] verify with the shared secret",
        ),
        (
            {
                "EARPIECE_JWT_ALGORITHMS": "RS256",
                "EARPIECE_JWT_JWKS_URL": "https://id.example.com/jwks",
                "EARPIECE_JWT_PUBLIC_KEY": "/etc/earpiece/idp.pem",
            },
            "EARPIECE_JWT_JWKS_URL: set EARPIECE_JWT_PUBLIC_KEY or this one, not both",
        ),
        (
            {"EARPIECE_JWT_ALGORITHMS": "RS256", "EARPIECE_JWT_JWKS_URL": "http://id/jwks"},
            "EARPIECE_JWT_JWKS_URL: 'http://id/jwks' is not an https URL",
        ),
        (
            {"EARPIECE_JWT_ALGORITHMS": "RS256", "EARPIECE_JWT_JWKS_URL": "file:///etc/jwks"},
            "EARPIECE_JWT_JWKS_URL: 'file:///etc/jwks' is not an https URL",
        ),
        ({"EARPIECE_JWT_LEEWAY_S": "-1"}, "EARPIECE_JWT_LEEWAY_S: -1.0 is negative"),
        ({"EARPIECE_JWT_LEEWAY_S": "soon"}, "EARPIECE_JWT_LEEWAY_S: Expected `float`, got `str`"),
    ],
)
def test_settings_from_env_with_unsafe_jwt_settings_exits_naming_the_variable(
    env: dict[str, str], match: str
) -> None:
    with pytest.raises(SystemExit, match=f"bad setting {match}"):
        Settings.from_env(env)


def test_settings_from_env_splits_jwt_algorithms_and_reads_the_jwks_url() -> None:
    settings = Settings.from_env(
        {
            "EARPIECE_JWT_ALGORITHMS": "RS256, EdDSA",
            "EARPIECE_JWT_JWKS_URL": "http://localhost:8080/jwks",
            "EARPIECE_JWT_LEEWAY_S": "2.5",
        }
    )
    assert (settings.jwt_algorithms, settings.jwt_jwks_url, settings.jwt_leeway_s) == (
        ("RS256", "EdDSA"),
        "http://localhost:8080/jwks",
        2.5,
    )


def test_settings_made_directly_with_mixed_algorithms_raise_settings_error() -> None:
    with pytest.raises(SettingsError, match="EARPIECE_JWT_ALGORITHMS: mixes") as raised:
        Settings(jwt_algorithms=("HS256", "EdDSA"), jwt_public_key="/k.pem")
    assert raised.value.variable == "EARPIECE_JWT_ALGORITHMS"


def test_settings_public_key_reads_a_pem_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "idp.pem"
    path.write_bytes(public_pem(rsa_key))
    settings = Settings(jwt_algorithms=("RS256",), jwt_public_key=str(path))
    assert settings.public_key() == rsa_key.public_key()


def test_settings_public_key_reads_pem_text_with_escaped_newlines(
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    one_line = public_pem(ed_key).decode().replace("\n", "\\n")
    settings = Settings(jwt_algorithms=("EdDSA",), jwt_public_key=one_line)
    assert settings.public_key() == ed_key.public_key()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("/nonexistent/idp.pem", "EARPIECE_JWT_PUBLIC_KEY: neither a PEM nor a readable file"),
        ("-----BEGIN PUBLIC KEY-----\\nbm90IGEga2V5\\n-----END", "not a PEM public key"),
    ],
)
def test_settings_public_key_that_cannot_be_loaded_raises_settings_error(
    value: str, match: str
) -> None:
    settings = Settings(jwt_algorithms=("RS256",), jwt_public_key=value)
    with pytest.raises(SettingsError, match=match):
        settings.public_key()


def test_settings_public_key_of_another_kind_than_the_algorithms_raises_settings_error(
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    settings = Settings(jwt_algorithms=("RS256",), jwt_public_key=public_pem(ed_key).decode())
    with pytest.raises(SettingsError, match=r"a .*Ed25519PublicKey cannot verify \['RS256'\]"):
        settings.public_key()


def test_settings_public_key_that_fits_only_some_of_the_algorithms_raises_settings_error(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    # A token whose header says ES256 would reach PyJWT with an RSA key: a TypeError, a 500.
    pem = public_pem(rsa_key).decode()
    settings = Settings(jwt_algorithms=("RS256", "ES256"), jwt_public_key=pem)
    with pytest.raises(SettingsError, match=r"a .*RSAPublicKey cannot verify \['ES256'\]"):
        settings.public_key()


# TokenVerifier with the shared secret


def test_verify_with_the_shared_secret_returns_the_claims() -> None:
    token = jwt.encode(claims(role="supervisor", whisper=True), SECRET, algorithm="HS256")
    verified = secret_verifier().verify(token, "room-1")
    assert (verified.sub, verified.role, verified.whisper) == ("agent-1", Role.SUPERVISOR, True)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"exp": int(time.time()) - 5}, "invalid token: Signature has expired"),
        ({"nbf": int(time.time()) + 3600}, "invalid token: The token is not yet valid"),
        ({"aud": "another-service"}, "invalid token: Audience doesn't match"),
        ({"iss": "https://evil.example.com/"}, "invalid token: Invalid issuer"),
        ({"role": "admin"}, "invalid token claims: Invalid enum value 'admin' - at `\\$.role`"),
        ({"room": None}, 'invalid token: Token is missing the "room" claim'),
        ({"sub": None}, 'invalid token: Token is missing the "sub" claim'),
        ({"exp": None}, 'invalid token: Token is missing the "exp" claim'),
        ({"name": 7}, "invalid token claims: Expected `str`, got `int` - at `\\$.name`"),
        ({"name": "n" * 129}, "invalid token claims: Expected `str` of length <= 128"),
        ({"queues": ["q"] * 65}, "invalid token claims: Expected `array` of length <= 64"),
    ],
)
def test_verify_of_an_unacceptable_token_raises_401(changes: dict[str, Any], match: str) -> None:
    token = jwt.encode(claims(**changes), SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match=match) as raised:
        secret_verifier().verify(token, "room-1")
    assert answer_for(raised.value).status == 401


def test_verify_of_a_token_for_another_room_raises_403() -> None:
    token = jwt.encode(claims(room="room-2"), SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="token is for room 'room-2', not 'room-1'") as raised:
        secret_verifier().verify(token, "room-1")
    assert answer_for(raised.value).status == 403


def test_verify_of_an_unsigned_token_raises_401() -> None:
    token = forge({"alg": "none", "typ": "JWT"}, claims())
    with pytest.raises(AuthError, match="invalid token: The specified alg value is not allowed"):
        secret_verifier().verify(token, "room-1")


def test_verify_of_a_token_signed_with_another_secret_raises_401() -> None:
    token = jwt.encode(claims(), "another-secret-of-at-least-32-bytes", algorithm="HS256")
    with pytest.raises(AuthError, match="invalid token: Signature verification failed"):
        secret_verifier().verify(token, "room-1")


def test_verify_with_leeway_accepts_a_token_expired_within_it() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    assert secret_verifier(leeway_s=30).verify(token, "room-1").room == "room-1"


# TokenVerifier with a public key


def test_verify_with_the_public_key_from_settings_returns_the_claims(
    tmp_path: Path, signer: tuple[str, PrivateKey]
) -> None:
    algorithm, key = signer
    path = tmp_path / "idp.pem"
    path.write_bytes(public_pem(key))
    verifier = verifier_from_settings(
        Settings(
            jwt_algorithms=(algorithm,),
            jwt_public_key=str(path),
            jwt_issuer="https://id.example.com/",
        )
    )
    assert verifier.verify(sign(key, algorithm), "room-1").sub == "agent-1"


def test_verify_with_a_public_key_refuses_a_token_of_another_key(
    rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    verifier = key_verifier(rsa_key)
    with pytest.raises(AuthError, match="invalid token: Signature verification failed"):
        verifier.verify(sign(rsa_key_2, "RS256"), "room-1")


def test_verify_with_rs256_refuses_hs256_signed_with_the_public_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    """Algorithm confusion: the public PEM, known to all, used as an HMAC secret."""
    verifier = key_verifier(rsa_key)
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(), hmac_key=public_pem(rsa_key))
    with pytest.raises(AuthError, match="invalid token: The specified alg value is not allowed"):
        verifier.verify(token, "room-1")


@pytest.mark.parametrize(
    ("secret", "algorithms", "match"),
    [
        (True, ("RS256",), r"a str key verifies \['HS256', 'HS384', 'HS512'\], not \['RS256'\]"),
        (False, ("HS256",), r"key verifies \['ES256', 'EdDSA', 'RS256'\], not \['HS256'\]"),
        (False, ("none",), r"key verifies \['ES256', 'EdDSA', 'RS256'\], not \['none'\]"),
        (False, (), r"not \[\]"),
    ],
)
def test_token_verifier_with_algorithms_its_key_cannot_verify_raises_value_error(
    secret: bool, algorithms: tuple[str, ...], match: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    key = SECRET if secret else rsa_key.public_key()
    with pytest.raises(ValueError, match=match):
        TokenVerifier(key, audience="a", issuer="i", algorithms=algorithms)


# TokenVerifier with a JWKS


async def test_verify_async_picks_the_jwks_key_by_kid_and_fetches_once(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    verifier = jwks_verifier(jwks.url)
    by_rsa = await verifier.verify_async(sign(rsa_key, "RS256", "rsa-1", sub="a"), "room-1")
    by_ed = await verifier.verify_async(sign(ed_key, "EdDSA", "ed-1", sub="b"), "room-1")
    assert (by_rsa.sub, by_ed.sub, jwks.requests) == ("a", "b", 1)


async def test_verify_async_of_a_token_signed_by_another_key_under_a_known_kid_raises_401(
    jwks: JwksServer, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(AuthError, match="invalid token: Signature verification failed"):
        await jwks_verifier(jwks.url).verify_async(sign(rsa_key_2, "RS256", "rsa-1"), "room-1")


async def test_verify_async_of_an_unknown_kid_raises_401(
    jwks: JwksServer, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(AuthError, match="invalid token: no signing key with kid 'rsa-9'") as raised:
        await jwks_verifier(jwks.url).verify_async(sign(rsa_key_2, "RS256", "rsa-9"), "room-1")
    assert answer_for(raised.value).status == 401


async def test_verify_async_of_a_token_without_kid_raises_401(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    with pytest.raises(AuthError, match="invalid token: no kid header"):
        await jwks_verifier(jwks.url).verify_async(token, "room-1")
    assert jwks.requests == 0


async def test_verify_async_after_rotation_fetches_the_set_again_for_the_new_kid(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    verifier = jwks_verifier(jwks.url, cooldown_s=0)
    await verifier.verify_async(sign(rsa_key, "RS256", "rsa-1"), "room-1")
    jwks.keys = [jwk(rsa_key_2, "rsa-2"), *jwks.keys]
    rotated = await verifier.verify_async(sign(rsa_key_2, "RS256", "rsa-2", sub="new"), "room-1")
    assert (rotated.sub, jwks.requests) == ("new", 2)


async def test_verify_async_within_the_cooldown_refuses_a_new_kid_without_fetching(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    verifier = jwks_verifier(jwks.url, cooldown_s=30)
    await verifier.verify_async(sign(rsa_key, "RS256", "rsa-1"), "room-1")
    jwks.keys = [jwk(rsa_key_2, "rsa-2"), *jwks.keys]
    with pytest.raises(AuthError, match="no signing key with kid 'rsa-2'"):
        await verifier.verify_async(sign(rsa_key_2, "RS256", "rsa-2"), "room-1")
    assert jwks.requests == 1


async def test_verify_async_with_the_jwks_endpoint_down_raises_503(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    url = f"http://127.0.0.1:{free_loopback_port()}/jwks"
    with pytest.raises(AuthError, match=f"signing keys unavailable from {url}: Fail") as raised:
        await jwks_verifier(url).verify_async(sign(rsa_key, "RS256", "rsa-1"), "room-1")
    assert answer_for(raised.value).status == 503


async def test_while_the_jwks_endpoint_fails_unknown_kids_do_not_each_fetch_it(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.body = b"<html>maintenance</html>"
    verifier = jwks_verifier(jwks.url)
    for n in range(50):
        with pytest.raises(IssuerUnavailable, match="signing keys unavailable"):
            await verifier.verify_async(sign(rsa_key, "RS256", f"made-up-{n}"), "room-1")
    assert jwks.requests == 1


async def test_verify_async_with_a_jwks_endpoint_answering_html_raises_503(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks.body = b"<html>maintenance</html>"
    with pytest.raises(
        AuthError, match=r"signing keys unavailable from .*: Expecting value"
    ) as raised:
        await jwks_verifier(jwks.url).verify_async(sign(rsa_key, "RS256", "rsa-1"), "room-1")
    assert answer_for(raised.value).status == 503


async def test_verify_async_with_the_set_cached_verifies_while_the_endpoint_is_down(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    verifier = jwks_verifier(jwks.url)
    await verifier.verify_async(sign(rsa_key, "RS256", "rsa-1"), "room-1")
    jwks.stop()
    verified = await verifier.verify_async(sign(ed_key, "EdDSA", "ed-1", sub="b"), "room-1")
    assert verified.sub == "b"


async def test_verify_async_with_a_jwks_refuses_hs256_signed_with_the_public_key(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = forge(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), hmac_key=public_pem(rsa_key)
    )
    with pytest.raises(AuthError, match="invalid token: The specified alg value is not allowed"):
        await jwks_verifier(jwks.url).verify_async(token, "room-1")


async def test_verify_async_with_a_jwks_of_a_token_for_another_room_raises_403(
    jwks: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(AuthError, match="token is for room 'room-2'") as raised:
        await jwks_verifier(jwks.url).verify_async(
            sign(rsa_key, "RS256", "rsa-1", room="room-2"), "room-1"
        )
    assert answer_for(raised.value).status == 403


def test_verify_from_settings_with_a_jwks_url_fetches_the_key(
    jwks: JwksServer, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    verifier = verifier_from_settings(
        Settings(
            jwt_algorithms=("EdDSA",), jwt_jwks_url=jwks.url, jwt_issuer="https://id.example.com/"
        )
    )
    assert verifier.verify(sign(ed_key, "EdDSA", "ed-1"), "room-1").sub == "agent-1"


# Resume tokens: nobody on a call loses it to an expiring token; supervisors get none

RESUME_KEY = "resume-key-of-at-least-32-bytes!!"


def resuming_verifier(rsa_key: rsa.RSAPrivateKey) -> TokenVerifier:
    """An issuer's RS256 keys, and the service's own key for resume tokens."""
    return key_verifier(rsa_key, resume_key=RESUME_KEY)


async def test_an_agents_resume_token_admits_them_to_their_room_only(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = resuming_verifier(rsa_key)
    agent = await verifier.verify_async(sign(rsa_key, "RS256"), "room-1")

    resume = verifier.resume_token(agent)

    assert resume is not None
    resumed = await verifier.verify_async(resume, "room-1")
    assert (resumed.sub, resumed.role, resumed.room) == ("agent-1", Role.AGENT, "room-1")
    with pytest.raises(AccessDenied, match="token is for room 'room-1', not 'room-2'"):
        await verifier.verify_async(resume, "room-2")


async def test_a_supervisor_gets_no_resume_token(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = resuming_verifier(rsa_key)
    supervisor = await verifier.verify_async(
        sign(rsa_key, "RS256", role="supervisor", whisper=True), "room-1"
    )

    assert verifier.resume_token(supervisor) is None


@pytest.mark.parametrize(
    ("key", "changes", "match"),
    [
        (SECRET, {}, "invalid resume token: Signature verification failed"),
        (RESUME_KEY, {"role": "supervisor"}, "only a customer's or an agent's"),
        (RESUME_KEY, {"whisper": True}, "only a customer's or an agent's"),
        (RESUME_KEY, {"exp": int(time.time()) - 10}, "Signature has expired"),
    ],
    ids=["another-key", "supervisor", "whisper-claim", "expired"],
)
async def test_a_resume_token_not_made_by_the_service_for_a_caller_is_refused(
    rsa_key: rsa.RSAPrivateKey, key: str, changes: dict[str, Any], match: str
) -> None:
    forged = jwt.encode(
        claims(aud="earpiece-resume", iss="earpiece", **changes), key, algorithm="HS256"
    )

    with pytest.raises(TokenRefused, match=match):
        await resuming_verifier(rsa_key).verify_async(forged, "room-1")


# Hostile claims and headers (issue 10's findings, kept as regressions)


@pytest.mark.parametrize(
    "changes",
    [
        {"role": "supervisor", "room": "*", "queues": [""]},
        {"role": "supervisor", "room": "*", "queues": ["sales", "  "]},
        {"queue": " "},
    ],
    ids=["empty-queue", "blank-queue", "blank-call-queue"],
)
async def test_a_token_naming_an_empty_or_blank_queue_is_refused(changes: dict[str, Any]) -> None:
    bad = jwt.encode(claims(**changes), SECRET, algorithm="HS256")

    with pytest.raises(TokenRefused, match="a queue name must not be empty or blank"):
        await secret_verifier().claims_async(bad)


async def test_a_header_algorithm_the_key_cannot_do_is_refused_not_a_crash(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # RS256 and ES256 allowed, an RSA key configured, a token whose header says ES256.
    verifier = key_verifier(rsa_key, "RS256", "ES256")

    with pytest.raises(TokenRefused, match="invalid token"):
        await verifier.verify_async(sign(ec_key, "ES256"), "room-1")
