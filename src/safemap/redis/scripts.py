"""The Lua scripts that make compound operations atomic on the server.

Each runs as one unit (Redis executes a script with no other command interleaved), so a
script's reads and writes take effect at one instant, and each is one round trip: it is
called by SHA (EVALSHA), and a server that lacks it (first use, restart, SCRIPT FLUSH) gets
its source in the same retry (``Endpoint.script``).

Encoding of absent values: scripts return ``{0}`` for "absent" and ``{1, value}`` for a
present value, since a Lua table cannot hold ``nil``. Where a script reports what it
changed (for the map's statistics), it says so below.
"""

from __future__ import annotations

from .connection import Script

__all__ = ["Scripts"]

# Returns {1, value} (present: nothing stored) or {0} (stored: an insert).
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

# Returns {1, previous} (an update) or {0} (an insert).
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

# merge(k, n, operator.add) on an integer field: {1 if the field existed else 0, total}.
# HINCRBY fails (and the script with it, having changed nothing) on a value that is not an
# integer of 64 bits, or on overflow.
MERGE_ADD = """
local existed = redis.call('HEXISTS', KEYS[1], ARGV[1])
return {existed, redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])}
"""

# clear(): deletes the hash; returns how many entries it had.
CLEAR = """
local n = redis.call('HLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
"""

# The read-set check shared by READ and COMMIT. Checks start at ARGV[first] and come in
# triples (field, '1' present | '0' absent, value). Returns true if every field still holds
# what was read.
_CHECK = """
local function check(h, first, count)
  local i = first
  for _ = 1, count do
    local cur = redis.call('HGET', h, ARGV[i])
    if ARGV[i + 1] == '1' then
      if cur ~= ARGV[i + 2] then return false end
    elseif cur then
      return false
    end
    i = i + 3
  end
  return true
end
-- On a conflict: {0, then per checked field '1', value or '0', ''}: the current values of
-- every field read, all at this one instant, so the caller retries without reading again.
local function current(h, first, count)
  local out = {0}
  local i = first
  for _ = 1, count do
    local cur = redis.call('HGET', h, ARGV[i])
    if cur then out[#out + 1] = '1'; out[#out + 1] = cur
    else out[#out + 1] = '0'; out[#out + 1] = '' end
    i = i + 3
  end
  return out
end
"""

# An optimistic read inside a transaction: verify that everything read so far is unchanged
# (so the callback never sees an inconsistent mix), then read more.
# ARGV[1]: 'f' (read the fields listed after the checks) or 'a' (read the whole hash);
# ARGV[2]: expected HLEN or '-1'; ARGV[3]: number of checks; checks; then the fields.
# Returns {0} if the length changed, the conflict reply of _CHECK if a field did; else
# {1, then for 'f' '1', value or '0', '' per field, for 'a' HGETALL's flat list}.
READ = (
    _CHECK
    + """
local h = KEYS[1]
local n = tonumber(ARGV[3])
if ARGV[2] ~= '-1' and redis.call('HLEN', h) ~= tonumber(ARGV[2]) then return {0} end
if not check(h, 4, n) then return current(h, 4, n) end
if ARGV[1] == 'a' then
  local all = redis.call('HGETALL', h)
  table.insert(all, 1, 1)
  return all
end
local out = {1}
for i = 4 + 3 * n, #ARGV do
  local v = redis.call('HGET', h, ARGV[i])
  if v then out[#out + 1] = '1'; out[#out + 1] = v
  else out[#out + 1] = '0'; out[#out + 1] = '' end
end
return out
"""
)

# The commit of every optimistic operation (compute family, transaction).
# ARGV[1]: expected HLEN or '-1'; ARGV[2]: number of checks; checks; then writes as
# triples ('s' set | 'd' delete, field, value).
# Returns {1, inserts, updates, deletes} when applied; {0} if the length changed; the
# conflict reply of _CHECK (the current values of the fields read) if a field did.
COMMIT = (
    _CHECK
    + """
local h = KEYS[1]
local n = tonumber(ARGV[2])
if ARGV[1] ~= '-1' and redis.call('HLEN', h) ~= tonumber(ARGV[1]) then return {0} end
if not check(h, 3, n) then return current(h, 3, n) end
local inserts, updates, deletes = 0, 0, 0
for i = 3 + 3 * n, #ARGV, 3 do
  if ARGV[i] == 's' then
    if redis.call('HSET', h, ARGV[i + 1], ARGV[i + 2]) == 1 then
      inserts = inserts + 1
    else
      updates = updates + 1
    end
  else
    deletes = deletes + redis.call('HDEL', h, ARGV[i + 1])
  end
end
return {1, inserts, updates, deletes}
"""
)

# compute_if_absent, step 1. KEYS: the hash, the key's lease; ARGV: field, token, lease ms.
# Returns {1, value} if present; else {0} if this caller now holds the lease, {2} if
# another caller does.
CLAIM = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {0} end
return {2}
"""

# compute_if_absent, step 2: the fenced commit. KEYS: the hash, the lease; ARGV: field,
# token, 's' (store ARGV[4]) or 'n' (the factory returned DELETE: store nothing).
# Returns {-1} if the lease is no longer this caller's (nothing changed); else releases it
# and returns {1, value} if the field was written meanwhile by a caller that took no lease
# (nothing stored), {0} otherwise (stored, or nothing to store).
FENCED_PUT = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {-1} end
redis.call('DEL', KEYS[2])
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return {1, v} end
if ARGV[3] == 's' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) end
return {0}
"""

# Extend (ARGV[2] ms) or, with ARGV[2] == '0', release the lease KEYS[1] if it holds our
# token ARGV[1]. Returns 1 if it was ours.
LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class Scripts:
    """Every script, as :class:`Script` objects (the same for every map)."""

    load_or_store = Script(LOAD_OR_STORE)
    load_and_delete = Script(LOAD_AND_DELETE)
    swap = Script(SWAP)
    compare_and_swap = Script(COMPARE_AND_SWAP)
    delete_if_equal = Script(DELETE_IF_EQUAL)
    merge_add = Script(MERGE_ADD)
    clear = Script(CLEAR)
    read = Script(READ)
    commit = Script(COMMIT)
    claim = Script(CLAIM)
    fenced_put = Script(FENCED_PUT)
    lease = Script(LEASE)
