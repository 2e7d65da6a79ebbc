"""``safemap.redis``: the ConcurrentMapping protocol on Redis (or Valkey), for maps shared
by processes and hosts. Needs the ``safemap[redis]`` extra (redis-py; hiredis optional).

Modules, one job each: ``map`` (``RedisMap``), ``codecs`` (JSON, msgpack, signed pickle),
``scripts`` (the Lua scripts), ``nearcache`` (the invalidated local copy), ``connection``
(connections, round trips and error translation), ``counters`` (the exact per-thread
operation counts behind ``stats()``), ``errors``.
"""

from .codecs import Codec, JsonCodec, MsgpackCodec, PickleCodec
from .errors import RedisConflictError, RedisConnectionError, RedisDecodeError, SignatureError
from .map import RedisMap

__all__ = [
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "PickleCodec",
    "RedisConflictError",
    "RedisConnectionError",
    "RedisDecodeError",
    "RedisMap",
    "SignatureError",
]
