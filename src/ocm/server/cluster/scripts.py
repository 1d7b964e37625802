"""The cluster's Lua scripts: every change to a room in the store is one of them.

Redis runs a script atomically, so each one checks and changes a room's keys with
nothing in between: that is what makes room and member names unique across nodes, and
what numbers a room's lines in one order (``emit``: INCR the room's counter, XADD the
entry to its capped stream, PUBLISH it on the bus). The keys (``ocm:`` prefix):

=========================  =============================================================
``ocm:rooms``              set: the names of the open rooms
``ocm:room:NAME``          hash: rid (the room's incarnation), password (scrypt salt and
                           digest, hex; empty: open), e2e, sealed, host (casefolded name),
                           host_name, host_ip, joins (the last place given)
``ocm:members:NAME``       hash: casefolded member name -> node id (16 hex), its place
                           in the join order (10 digits: the host's is 0) and its name
``ocm:seq:NAME``           the room's counter: the number of its last entry
``ocm:history:NAME``       stream: the room's last entries (ID ``COUNTER-1``; fields
                           ``r`` rid, ``e`` entry); kept a minute after the room closes
``ocm:hosted:IP``          rooms the IP hosts (--max-rooms-per-ip, cluster-wide)
``ocm:fails:IP``           wrong passwords of the IP in the failure window
``ocm:node:ID``            a node's presence: a key whose TTL the node refreshes
``ocm:nodes``              set: the nodes that have been present
``ocm:published:ID``       the number of the last publish a node made (a retry after a
                           lost reply is not published twice)
``ocm:epoch``              random, set once: a node that sees another after a reconnect
                           knows the store lost its data and writes its rooms back
=========================  =============================================================

Scripts name the keys of their room in KEYS; the few keys they derive (hosted, node
presence) are named in ARGV, so they need one Redis, not a Redis Cluster (documented).
Entries are opaque to the scripts but for ``f()``, the field format of
:mod:`ocm.server.cluster.entries`.
"""

from __future__ import annotations

__all__ = ["CREATE", "JOIN", "LIST", "PUBLISH", "REAP", "RESTORE"]

# Shared by the scripts that publish. ``emit`` numbers an entry, keeps it and publishes
# it: INCR, XADD (MAXLEN ~: trimmed by whole stream nodes, cheap), PUBLISH.
_PRELUDE = """
local function f(value) return #value .. ':' .. value end
local function emit(seq_key, stream_key, maxlen, bus, room, rid, entry)
  local counter = redis.call('INCR', seq_key)
  redis.call('XADD', stream_key, 'MAXLEN', '~', maxlen, counter .. '-1', 'r', rid, 'e', entry)
  redis.call('PUBLISH', bus, f(room) .. f(rid) .. f(tostring(counter)) .. entry)
  return counter
end
"""

# KEYS: room, members, seq, history, rooms, hosted(ip)
# ARGV: name, rid, password, e2e, sealed, host key, host value, host ip, max rooms,
#       max rooms per ip
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'room_exists' end
if redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[9]) then return 'server_full' end
if tonumber(redis.call('GET', KEYS[6]) or '0') >= tonumber(ARGV[10]) then
  return 'hosts_enough'
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'rid', ARGV[2], 'password', ARGV[3], 'e2e', ARGV[4],
           'sealed', ARGV[5], 'host', ARGV[6], 'host_name', string.sub(ARGV[7], 27),
           'host_ip', ARGV[8], 'joins', 0)
redis.call('HSET', KEYS[2], ARGV[6], ARGV[7])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('INCR', KEYS[6])
return 'ok'
"""

# KEYS: room, members.  ARGV: rid, member key, node, max members, member name
# Returns 'ok' and the members' values (the joiner's among them), or why not.
JOIN = """
if redis.call('HGET', KEYS[1], 'rid') ~= ARGV[1] then return {'no_such_room'} end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return {'name_taken'} end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return {'room_full'} end
local place = redis.call('HINCRBY', KEYS[1], 'joins', 1)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. string.format('%010d', place) .. ARGV[5])
local members = redis.call('HVALS', KEYS[2])
table.insert(members, 1, 'ok')
return members
"""

# KEYS: room, members, seq, history, rooms, published(node)
# ARGV: op, name, rid, entry, member key, node, maxlen, bus, publish number
# op: say (emit), leave (the member leaves, then emit), close (emit, then the room is
# gone), drop (the room is gone, nothing said: a create its node could not finish),
# unreserve (the member is gone, nothing said: a join its node could not finish).
# Returns the entry's counter, 0 when nothing was said, nil when the room is gone (or
# is another incarnation), -1 for a publish already made (a retry).
PUBLISH = (
    _PRELUDE
    + """
local number = tonumber(ARGV[9])
if tonumber(redis.call('GET', KEYS[6]) or '0') >= number then return -1 end
redis.call('SET', KEYS[6], number)
if redis.call('HGET', KEYS[1], 'rid') ~= ARGV[3] then return nil end
local op = ARGV[1]
if op == 'leave' or op == 'unreserve' then
  -- a member the reaper took (its node seemed dead) was said to have timed out already
  local value = redis.call('HGET', KEYS[2], ARGV[5])
  if not value or string.sub(value, 1, 16) ~= ARGV[6] then return 0 end
  redis.call('HDEL', KEYS[2], ARGV[5])
  if op == 'unreserve' then return 0 end
end
local counter = 0
if op ~= 'drop' then
  counter = emit(KEYS[3], KEYS[4], ARGV[7], ARGV[8], ARGV[2], ARGV[3], ARGV[4])
end
if op == 'close' or op == 'drop' then
  local hosted = 'ocm:hosted:' .. redis.call('HGET', KEYS[1], 'host_ip')
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('EXPIRE', KEYS[4], 60)
  redis.call('SREM', KEYS[5], ARGV[2])
  if redis.call('DECR', hosted) <= 0 then redis.call('DEL', hosted) end
end
return counter
"""
)

# KEYS: nodes, rooms.  ARGV: the presence key prefix ('ocm:node:')
# Takes every member of every node whose presence key expired, atomically (so one
# node, the one that runs it first, announces them): returns room, rid, name, and
# '1' if it was the room's host, for each.
REAP = """
local dead = {}
local any = false
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. node) == 0 then
    dead[node] = true
    any = true
    redis.call('SREM', KEYS[1], node)
    redis.call('DEL', 'ocm:published:' .. node)
  end
end
if not any then return {} end
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local members = 'ocm:members:' .. room
  local host = redis.call('HGET', 'ocm:room:' .. room, 'host')
  local rid = redis.call('HGET', 'ocm:room:' .. room, 'rid') or ''
  local flat = redis.call('HGETALL', members)
  for i = 1, #flat, 2 do
    local value = flat[i + 1]
    if dead[string.sub(value, 1, 16)] then
      redis.call('HDEL', members, flat[i])
      table.insert(out, room)
      table.insert(out, rid)
      table.insert(out, string.sub(value, 27))
      table.insert(out, flat[i] == host and '1' or '')
    end
  end
end
return out
"""

# KEYS: rooms.  Returns name, member count, '1' if protected, for each open room.
LIST = """
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local password = redis.call('HGET', 'ocm:room:' .. room, 'password') or ''
  table.insert(out, room)
  table.insert(out, redis.call('HLEN', 'ocm:members:' .. room))
  table.insert(out, password ~= '' and '1' or '')
end
return out
"""

# KEYS: room, members, seq, rooms, history
# ARGV: name, rid, password, e2e, sealed, host key, host ip, counter, host name,
#       create ('1': the room may be missing), the places given (joins), renumber
#       ('1': a member added again takes the next place, as a joiner), then member key
#       and value pairs.
# A node writes a room it has members in back after it was cut off: into a store that
# lost it (Redis restarted without its data), or one that went on without the node.
# The room's facts (if it is missing and ``create``), its counter (the highest any
# node saw) and the node's members. Returns 'ok', the store's counter before, and the
# members it had to add again (the reaper took them); 'gone' (closed meanwhile), or
# 'conflict' (the name is another room's now).
RESTORE = """
local rid = redis.call('HGET', KEYS[1], 'rid')
if rid and rid ~= ARGV[2] then return {'conflict'} end
if not rid and ARGV[10] ~= '1' then return {'gone'} end
if not rid then
  -- a closed room's stream (kept a minute) is not this one's: its IDs would clash
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[1], 'rid', ARGV[2], 'password', ARGV[3], 'e2e', ARGV[4],
             'sealed', ARGV[5], 'host', ARGV[6], 'host_ip', ARGV[7], 'host_name', ARGV[9],
             'joins', 0)
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('INCR', 'ocm:hosted:' .. ARGV[7])
end
local before = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[8]) > before then
  redis.call('SET', KEYS[3], ARGV[8])
end
if tonumber(ARGV[11]) > tonumber(redis.call('HGET', KEYS[1], 'joins') or '0') then
  redis.call('HSET', KEYS[1], 'joins', ARGV[11])
end
local added = {'ok', tostring(before)}
for i = 13, #ARGV, 2 do
  local value = ARGV[i + 1]
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    if ARGV[12] == '1' then
      local place = redis.call('HINCRBY', KEYS[1], 'joins', 1)
      value = string.sub(value, 1, 16) .. string.format('%010d', place) .. string.sub(value, 27)
    end
    redis.call('HSET', KEYS[2], ARGV[i], value)
    table.insert(added, value)
  end
end
return added
"""
