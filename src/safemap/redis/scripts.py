"""The Lua scripts that make compound operations atomic on the server.

Each runs as one unit (Redis executes a script with no other command interleaved), so a
script's reads and writes take effect at one instant. They are sent once per connection
with SCRIPT LOAD and then called by SHA (EVALSHA); a server that lost its script cache
(restart, SCRIPT FLUSH) gets them again transparently.

Encoding of absent values: scripts return ``{0}`` for "absent" and ``{1, value}`` for a
present value, since a Lua table cannot hold ``nil``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Scripts"]

LOAD_OR_STORE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return {1, v} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {0}
"""

LOAD_AND_DELETE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {0} end
redis.call('HDEL', KEYS[1], ARGV[1])
return {1, v}
"""

SWAP = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if v then return {1, v} end
return {0}
"""

COMPARE_AND_SWAP = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# ARGV: field1, expected1, field2, expected2, ... Deletes each field still holding the
# expected bytes; returns how many it deleted.
DELETE_IF_EQUAL = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""

# The read-set check shared by READ and COMMIT. Checks start at ARGV[first] and come in
# triples (field, '1' present | '0' absent, value). Returns the index after the checks, or
# nil when a field no longer holds what was read.
_CHECK = """
local function check(h, first, count)
  local i = first
  for _ = 1, count do
    local cur = redis.call('HGET', h, ARGV[i])
    if ARGV[i + 1] == '1' then
      if cur ~= ARGV[i + 2] then return nil end
    elseif cur then
      return nil
    end
    i = i + 3
  end
  return i
end
"""

# An optimistic read inside a transaction: verify that everything read so far is unchanged
# (so the callback never sees an inconsistent mix), then read more.
# ARGV[1]: 'f' (read the fields listed after the checks) or 'a' (read the whole hash);
# ARGV[2]: expected HLEN or '-1'; ARGV[3]: number of checks; checks; then the fields.
# Returns false on conflict; else for 'f' a flat list of (flag, value) per field, for 'a'
# HGETALL's flat list.
READ = (
    _CHECK
    + """
local h = KEYS[1]
if ARGV[2] ~= '-1' and redis.call('HLEN', h) ~= tonumber(ARGV[2]) then return false end
local i = check(h, 4, tonumber(ARGV[3]))
if not i then return false end
if ARGV[1] == 'a' then return redis.call('HGETALL', h) end
local out = {}
while i <= #ARGV do
  local v = redis.call('HGET', h, ARGV[i])
  if v then out[#out + 1] = '1'; out[#out + 1] = v
  else out[#out + 1] = '0'; out[#out + 1] = '' end
  i = i + 1
end
return out
"""
)

# The commit of every optimistic operation (compute family, transaction).
# KEYS[1]: the hash; KEYS[2]: a lease key (only with a token).
# ARGV[1]: lease token or '' (fenced commit: the lease must still be ours; it is released);
# ARGV[2]: expected HLEN or '-1'; ARGV[3]: number of checks; checks; then writes as
# triples ('s' set | 'd' delete, field, value). Returns 1 applied, 0 conflict, -1 lease lost.
COMMIT = (
    _CHECK
    + """
local h = KEYS[1]
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if ARGV[2] ~= '-1' and redis.call('HLEN', h) ~= tonumber(ARGV[2]) then return 0 end
local i = check(h, 4, tonumber(ARGV[3]))
if not i then return 0 end
while i <= #ARGV do
  if ARGV[i] == 's' then
    redis.call('HSET', h, ARGV[i + 1], ARGV[i + 2])
  else
    redis.call('HDEL', h, ARGV[i + 1])
  end
  i = i + 3
end
if ARGV[1] ~= '' then redis.call('DEL', KEYS[2]) end
return 1
"""
)

# Extend (ARGV[2] ms) or, with ARGV[2] == '0', release the lease KEYS[1] if it holds our
# token ARGV[1]. Returns 1 if it was ours.
LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class Scripts:
    """The scripts registered on one client (each call is an EVALSHA)."""

    __slots__ = (
        "commit",
        "compare_and_swap",
        "delete_if_equal",
        "lease",
        "load_and_delete",
        "load_or_store",
        "read",
        "swap",
    )

    def __init__(self, client: Any) -> None:
        self.load_or_store = client.register_script(LOAD_OR_STORE)
        self.load_and_delete = client.register_script(LOAD_AND_DELETE)
        self.swap = client.register_script(SWAP)
        self.compare_and_swap = client.register_script(COMPARE_AND_SWAP)
        self.delete_if_equal = client.register_script(DELETE_IF_EQUAL)
        self.read = client.register_script(READ)
        self.commit = client.register_script(COMMIT)
        self.lease = client.register_script(LEASE)
