"""Codecs: how keys and values become the bytes of a Redis hash field and value.

Guarantees every codec here keeps:

- **Canonical keys**: keys equal in Python (``1``, ``1.0``, ``True``) encode to the same
  field, so they are one entry, as in a ``dict``; a key the codec cannot represent raises
  ``TypeError`` at the call, before anything is sent.
- **Canonical values**: equal values of the supported types encode to equal bytes (object
  keys are sorted), which is what server-side compare-and-swap compares.
- **Exact round trip**: a value is accepted only if decoding its bytes gives back an equal
  value of the same type; anything else (a tuple, a set, a dict with non-string keys, an
  arbitrary object) raises ``TypeError`` at the call rather than coming back different.
- **Decoding never runs code.** The JSON and msgpack codecs only build plain data; the
  pickle codec unpickles only data carrying a valid HMAC-SHA256 signature of its secret.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import json
import math
import pickle
from typing import Any, NoReturn

from .errors import SignatureError

__all__ = ["Codec", "JsonCodec", "MsgpackCodec", "PickleCodec", "get_codec"]


class Codec(abc.ABC):
    """Turns keys and values into bytes and back (see the module's guarantees).

    ``decode_*`` raise ``ValueError`` (or a subclass) on data they cannot decode; the map
    turns that into :class:`~safemap.redis.RedisDecodeError` naming the map and field.
    """

    name: str = "codec"
    #: True when an int value is stored as its decimal digits and nothing else, so the
    #: server's HINCRBY adds to it in place (the numeric ``merge`` fast path).
    integers_are_decimal: bool = False

    @abc.abstractmethod
    def encode_key(self, key: Any) -> bytes: ...

    @abc.abstractmethod
    def decode_key(self, data: bytes) -> Any: ...

    @abc.abstractmethod
    def encode_value(self, value: Any) -> bytes: ...

    @abc.abstractmethod
    def decode_value(self, data: bytes) -> Any: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


# ------------------------------------------------------------------ shared canonical forms


def _canonical_key(key: Any, *, allow_bytes: bool = False) -> Any:
    """The plain-data form of a key: equal keys give equal forms.

    ``bool`` and integral ``float`` keys become ``int`` (they are equal to it and hash
    alike, so a dict treats them as one key); tuples become lists of canonical items.
    """
    kind = type(key)
    if kind is str or key is None:
        return key
    if kind is int:
        return key
    if kind is bool:
        return int(key)
    if kind is float:
        if not math.isfinite(key):
            raise TypeError(f"a non-finite float key ({key!r}) cannot be stored in Redis")
        return int(key) if key.is_integer() else key
    if kind is tuple:
        return [_canonical_key(item, allow_bytes=allow_bytes) for item in key]
    if kind is bytes and allow_bytes:
        return key
    raise TypeError(
        f"a {kind.__name__} key cannot be represented by this codec "
        "(keys are str, int, float, bool, None or tuples of them)"
    )


def _tuplify(data: Any) -> Any:
    """Decoded key data back to a key: arrays become tuples; nothing unhashable remains."""
    if isinstance(data, list):
        return tuple(_tuplify(item) for item in data)
    if isinstance(data, dict):
        raise ValueError("a key cannot be an object")
    return data


def _check_value(value: Any, *, allow_bytes: bool, depth: int = 0) -> None:
    """Raise ``TypeError`` unless ``value`` round-trips exactly through the codec."""
    if depth > 500:
        raise TypeError("value nested too deeply (or recursive) for Redis")
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return
    if kind is float:
        if not math.isfinite(value):
            raise TypeError(f"a non-finite float ({value!r}) cannot be stored portably")
        return
    if kind is bytes and allow_bytes:
        return
    if kind is list:
        for item in value:
            _check_value(item, allow_bytes=allow_bytes, depth=depth + 1)
        return
    if kind is dict:
        for k, item in value.items():
            if type(k) is not str:
                raise TypeError(
                    f"a dict value with a {type(k).__name__} key would not round-trip "
                    "(object keys must be str)"
                )
            _check_value(item, allow_bytes=allow_bytes, depth=depth + 1)
        return
    raise TypeError(
        f"a {kind.__name__} value cannot be represented by this codec "
        "(values are None, bool, int, float, str, list and dict with str keys; "
        "use PickleCodec for arbitrary objects)"
    )


# ---------------------------------------------------------------------------- JSON


class JsonCodec(Codec):
    """The default: compact JSON with sorted object keys, UTF-8. Readable by any language."""

    name = "json"
    integers_are_decimal = True

    def encode_key(self, key: Any) -> bytes:
        return _dump_json(_canonical_key(key))

    def decode_key(self, data: bytes) -> Any:
        return _tuplify(_load_json(data))

    def encode_value(self, value: Any) -> bytes:
        _check_value(value, allow_bytes=False)
        return _dump_json(value)

    def decode_value(self, data: bytes) -> Any:
        return _load_json(data)


def _dump_json(data: Any) -> bytes:
    return json.dumps(
        data, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode(), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


# ------------------------------------------------------------------------- msgpack


class MsgpackCodec(Codec):
    """Compact binary: msgpack (needs the ``msgpack`` package). Also stores ``bytes``."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("MsgpackCodec needs the msgpack package") from exc
        self._msgpack: Any = msgpack

    def _pack(self, data: Any) -> bytes:
        try:
            packed: bytes = self._msgpack.packb(_sorted(data), use_bin_type=True)
        except (OverflowError, ValueError) as exc:
            raise TypeError(f"msgpack cannot represent this value: {exc}") from None
        return packed

    def _unpack(self, data: bytes, *, use_list: bool) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False, use_list=use_list, strict_map_key=True)
        except Exception as exc:  # msgpack's errors share no base class but Exception
            raise ValueError(f"not valid msgpack: {exc}") from None

    def encode_key(self, key: Any) -> bytes:
        return self._pack(_canonical_key(key, allow_bytes=True))

    def decode_key(self, data: bytes) -> Any:
        return _tuplify(self._unpack(data, use_list=True))

    def encode_value(self, value: Any) -> bytes:
        _check_value(value, allow_bytes=True)
        return self._pack(value)

    def decode_value(self, data: bytes) -> Any:
        return self._unpack(data, use_list=True)


def _sorted(data: Any) -> Any:
    """``data`` with every dict rebuilt in sorted key order (so equal dicts pack alike)."""
    if type(data) is dict:
        return {k: _sorted(data[k]) for k in sorted(data)}
    if type(data) is list:
        return [_sorted(item) for item in data]
    return data


# -------------------------------------------------------------------------- pickle

_SIGNED = b"SMP1"  # format tag of a signed pickle: tag, 32-byte HMAC-SHA256, pickle


class PickleCodec(Codec):
    """Arbitrary picklable values, signed with HMAC-SHA256 under ``secret``.

    Decoding checks the signature first (in constant time) and refuses unsigned, truncated
    or forged data with :class:`~safemap.redis.SignatureError` before ``pickle`` sees a
    byte, so only a holder of the secret can make a reader unpickle anything. Keep the
    secret as secret as the server's password: anyone who has it can run code in readers.
    Keys use the JSON key encoding (canonical; never unpickled). Values are compared by
    their pickled bytes in ``compare_and_swap``: equal values that pickle differently (for
    instance sets, or dicts built in another order) do not match.
    """

    name = "pickle"

    def __init__(self, secret: bytes | str, *, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("PickleCodec needs a secret of at least 16 bytes")
        self._secret = secret
        self._protocol = protocol
        self._keys = JsonCodec()

    def __repr__(self) -> str:
        return "<PickleCodec (signed)>"  # never the secret

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PickleCodec is not pickled: it holds a secret")

    def encode_key(self, key: Any) -> bytes:
        return self._keys.encode_key(key)

    def decode_key(self, data: bytes) -> Any:
        return self._keys.decode_key(data)

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def encode_value(self, value: Any) -> bytes:
        try:
            payload = pickle.dumps(value, protocol=self._protocol)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise TypeError(f"value cannot be pickled: {exc}") from None
        return _SIGNED + self._sign(payload) + payload

    def decode_value(self, data: bytes) -> Any:
        head = len(_SIGNED) + 32
        if len(data) < head or not data.startswith(_SIGNED):
            raise SignatureError("refused unsigned data (not written by a PickleCodec)")
        signature, payload = data[len(_SIGNED) : head], data[head:]
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise SignatureError("refused data whose signature does not match the secret")
        return pickle.loads(payload)


def get_codec(codec: str | Codec) -> Codec:
    """The codec named ``"json"`` or ``"msgpack"``, or ``codec`` itself if it is a Codec."""
    if isinstance(codec, Codec):
        return codec
    if codec == "json":
        return JsonCodec()
    if codec == "msgpack":
        return MsgpackCodec()
    if codec == "pickle":
        raise ValueError("the pickle codec needs a secret: pass codec=PickleCodec(secret=...)")
    raise ValueError(f"unknown codec {codec!r} (use 'json', 'msgpack' or a Codec instance)")
