"""Whatever the store holds, reading it never runs code; credentials never leak."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from safemap.redis import (
    PickleCodec,
    RedisConnectionError,
    RedisDecodeError,
    RedisMap,
    SignatureError,
)

SECRET = b"0123456789abcdef-test-secret"


class Planted:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (Path(self.path),))


def test_planted_pickle_is_refused_by_the_json_codec(
    rmap: RedisMap[Any, Any], raw: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    raw.hset(rmap.name, b'"k"', pickle.dumps(Planted(str(marker))))
    with pytest.raises(RedisDecodeError):
        rmap["k"]
    assert not marker.exists()


def test_unsigned_and_forged_pickles_are_refused_before_unpickling(
    url: str, raw: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    m: RedisMap[str, Any] = RedisMap(url=url, codec=PickleCodec(SECRET))
    m["ok"] = {1, 2}  # arbitrary picklable values round-trip
    assert m["ok"] == {1, 2}
    payload = pickle.dumps(Planted(str(marker)))
    raw.hset(m.name, b'"unsigned"', payload)
    forged = PickleCodec(b"another-secret-of-16+bytes").encode_value(Planted(str(marker)))
    raw.hset(m.name, b'"forged"', forged)
    tampered = bytearray(raw.hget(m.name, b'"ok"'))
    tampered[-2] ^= 1
    raw.hset(m.name, b'"tampered"', bytes(tampered))
    for key in ("unsigned", "forged", "tampered"):
        with pytest.raises(SignatureError) as info:
            m[key]
        assert m.name in str(info.value)
    assert not marker.exists()
    assert SECRET.decode() not in repr(m.codec)


def test_pickle_codec_needs_a_real_secret_and_is_never_pickled() -> None:
    with pytest.raises(ValueError):
        PickleCodec(b"short")
    with pytest.raises(TypeError):
        pickle.dumps(PickleCodec(SECRET))


def test_corrupt_value_raises_a_clear_error(rmap: RedisMap[Any, Any], raw: Any) -> None:
    raw.hset(rmap.name, b'"k"', b'{"truncated": ')
    raw.hset(rmap.name, b"not-a-json-key", b"1")
    with pytest.raises(RedisDecodeError, match="field"):
        rmap.get("k")
    with pytest.raises(RedisDecodeError, match="not-a-json-key"):
        list(rmap)


def test_acl_user_works_and_credentials_never_appear(url: str, raw: Any) -> None:
    password = "s3cret-pw-" + os.urandom(4).hex()
    user = "safemap-" + os.urandom(3).hex()
    raw.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    try:
        host_port = url.removeprefix("redis://").removesuffix("/0")
        m: RedisMap[str, int] = RedisMap({"a": 1}, url=f"redis://{user}:{password}@{host_port}/0")
        assert m["a"] == 1
        assert password not in repr(m)
        bad = f"redis://{user}:wrong-{password}@{host_port}/0"
        with pytest.raises(RedisConnectionError) as info:
            RedisMap({"a": 1}, url=bad)
        assert password not in str(info.value) and host_port in str(info.value)
    finally:
        raw.acl_deluser(user)


def test_tls_connection_with_certificate_verification(tmp_path: Path) -> None:
    import shutil
    import socket
    import subprocess

    from support.redis_server import RedisServer, find_binary

    openssl, binary = shutil.which("openssl"), find_binary()
    if openssl is None or binary is None:
        pytest.skip("needs the openssl command and a redis-server binary")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        tls_port = s.getsockname()[1]
    server = RedisServer(
        binary,
        extra=("--tls-port", str(tls_port), "--tls-cert-file", str(cert),
               "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
               "--tls-auth-clients", "no"),
    )  # fmt: skip
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        m: RedisMap[str, int] = RedisMap({"a": 1}, url=url)
        assert m["a"] == 1 and m.merge("a", 1, lambda x, y: x + y) == 2
        unverified = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required"
        with pytest.raises(RedisConnectionError):
            RedisMap({"a": 1}, url=unverified)  # the self-signed certificate is not trusted
        m.close()
    finally:
        server.stop()
