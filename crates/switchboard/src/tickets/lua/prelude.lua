-- Shared by every hold script (prepended to each one). The rules are those of the pure
-- `tickets` crate (crates/tickets/src/state.rs); tests/holds_model.rs runs both side by side.
--
-- KEYS[1] = <base>ev, where <base> = <prefix>{e:<eventId>}: ; every other key this script
-- touches starts with the same <base>, so it shares the event's hash slot (Redis Cluster).
-- ARGV[1] = <base>, ARGV[2] = how many ended lock ids / processed order ids to remember,
-- ARGV[3] = now (unix ms). The script's own arguments start at ARGV[4].
--
-- Keys under <base>:
--   ev            hash: name, seq (lock id sequence), n_live, n_confirmed, n_users,
--                 n_expired, n_released, n_completed
--   cats          set of category ids
--   c:<cat>       hash: name, price, total, avail (unsold), held (seats in live holds),
--                 ver (bumped by every call that changes what clients see of it)
--   h:<lock>      hash: user, cat, qty, sess, node, created, expires, status
--   dl            zset lock -> expiresAt (the expiry schedule)
--   ids           zset lock -> 0 (live holds in lock id order)
--   u:<user>      hash cat -> lock (one live hold per user per category)
--   s:<session>   zset lock -> 0 (a session's live holds, lock id order)
--   n:<node>      zset lock -> 0 (live holds granted through a node)
--   ended/endedq  hash lock -> status and its insertion order (bounded)
--   orders/ordersq hash orderId -> kind and its insertion order (bounded)
--
-- Numbers that can exceed 2^53 (ids) are never converted: they stay strings. Times are
-- compared as doubles (exact for unix milliseconds).
local B = ARGV[1]
local EV = KEYS[1]
local CAP = tonumber(ARGV[2])
local NOW = tonumber(ARGV[3])
local DL = B .. 'dl'
local IDS = B .. 'ids'

local touched, touched_list = {}, {}
local function touch(c)
  if not touched[c] then
    touched[c] = true
    touched_list[#touched_list + 1] = c
  end
end

local function cat_key(c) return B .. 'c:' .. c end
local function hold_key(l) return B .. 'h:' .. l end
local function user_key(u) return B .. 'u:' .. u end
local function sess_key(s) return B .. 's:' .. s end
local function node_key(n) return B .. 'n:' .. n end

-- Per-script caches. Every `redis.call` costs a script far more than the command itself
-- (the Lua bridge, argument objects, AOF propagation), so a batch of operations reads each
-- category's seat numbers once and writes them back once, in `finish`, and adds up the
-- event's counters there: one read and one write per touched category and per counter,
-- instead of two or three per operation.
local cats, cat_dirty = {}, {}  -- c -> {total, avail, held, ver} (numbers) or false (unknown)
local counters = {}             -- EV field -> delta, written by finish
local function count(field, by) counters[field] = (counters[field] or 0) + by end
-- A category's numbers (the cached table, changed in place by `set_seats`), or nil when
-- the event has no such category. Every category hash has `total`, `avail` and `held`
-- (upsert writes them).
local function seats(c)
  local s = cats[c]
  if s == nil then
    local v = redis.call('HMGET', cat_key(c), 'total', 'avail', 'held', 'ver')
    if v[1] and v[2] and v[3] then
      s = {total = tonumber(v[1]), avail = tonumber(v[2]), held = tonumber(v[3]),
        ver = tonumber(v[4] or 0)}
    else
      s = false
    end
    cats[c] = s
  end
  return s or nil
end
local function set_seats(c, field, value)
  cats[c][field] = value
  local d = cat_dirty[c]
  if not d then d = {}; cat_dirty[c] = d end
  d[field] = true
end
-- Writes what the caches changed (called by finish, and by a script before it writes a
-- category directly).
local function flush()
  for c, d in pairs(cat_dirty) do
    local s, args = cats[c], {}
    for f in pairs(d) do args[#args + 1] = f; args[#args + 1] = s[f] end
    redis.call('HSET', cat_key(c), unpack(args))
  end
  cat_dirty = {}
  for f, by in pairs(counters) do
    if by ~= 0 then redis.call('HINCRBY', EV, f, by) end
  end
  counters = {}
end

local function read_hold(l)
  local f = redis.call('HGETALL', hold_key(l))
  if #f == 0 then return nil end
  local h = {}
  for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
  return h
end

local function hold_reply(l, h, status)
  return {l, h.user, h.cat, h.qty, h.sess, h.created, h.expires, status or h.status}
end

-- `Recent::insert`: an existing key keeps its place; the oldest are forgotten beyond CAP,
-- by `finish` at the end of the script (one LPOP and one HDEL however many were added).
-- (Every `redis.call` costs the script more than the command itself: HSET says whether
-- the key is new and RPUSH the list's length, so no HEXISTS or LLEN is needed.)
local remembered = {} -- list -> {hash, length}
local function remember(hash, list, key, value)
  if redis.call('HSET', hash, key, value) == 0 then return end
  remembered[list] = {hash, redis.call('RPUSH', list, key)}
end
local function forget_oldest()
  for list, r in pairs(remembered) do
    local extra = r[2] - CAP
    while extra > 0 do
      local n = extra
      if n > 1000 then n = 1000 end
      redis.call('HDEL', r[1], unpack(redis.call('LPOP', list, n)))
      extra = extra - n
    end
  end
  remembered = {}
end

-- `State::end_hold`: out of every index, counted, remembered, its category touched.
-- `h`: the hold as the caller already read it, if it did.
local function end_hold(l, status, h)
  h = h or read_hold(l)
  if not h then return nil end
  -- A category that is gone keeps no numbers.
  local s = seats(h.cat)
  if s then
    local held = s.held - tonumber(h.qty)
    if held < 0 then held = 0 end
    set_seats(h.cat, 'held', held)
  end
  local uk = user_key(h.user)
  redis.call('HDEL', uk, h.cat)
  if redis.call('EXISTS', uk) == 0 then count('n_users', -1) end
  redis.call('ZREM', sess_key(h.sess), l)
  redis.call('ZREM', node_key(h.node), l)
  redis.call('ZREM', DL, l)
  redis.call('ZREM', IDS, l)
  redis.call('DEL', hold_key(l))
  count('n_live', -1)
  if h.status == 'confirmed' then count('n_confirmed', -1) end
  local counter = 'n_released'
  if status == 'expired' then counter = 'n_expired' elseif status == 'completed' then counter = 'n_completed' end
  count(counter, 1)
  remember(B .. 'ended', B .. 'endedq', l, status)
  touch(h.cat)
  return hold_reply(l, h, status)
end

local function end_all(ids, status)
  local out = {}
  for _, l in ipairs(ids) do
    local r = end_hold(l, status)
    if r then out[#out + 1] = r end
  end
  return out
end

-- `State::expire_due`: every live hold whose deadline is at or before NOW, earliest first
-- (ties in lock id order, as the zset orders equal scores).
local function sweep()
  return end_all(redis.call('ZRANGEBYSCORE', DL, '-inf', NOW), 'expired')
end

local function availability(c)
  local s = seats(c)
  if not s then return nil end
  local free = s.avail - s.held
  if free < 0 then free = 0 end
  return {c, tostring(free), tostring(s.held), tostring(s.total), tostring(s.ver)}
end

-- Every reply: {code, value, swept holds, availability of every touched category (with
-- its version, bumped once per call that touched it), next deadline of the event or '',
-- availability of the category `seen` as it stands (a refused lock's answer carries it:
-- read here, it saves the caller a second script; not a change, so nothing announces it)}.
local function finish(code, value, swept, seen)
  for _, c in ipairs(touched_list) do
    local s = seats(c)
    if s then set_seats(c, 'ver', s.ver + 1) end
  end
  forget_oldest()
  flush()
  local av = {}
  for _, c in ipairs(touched_list) do
    local a = availability(c)
    if a then av[#av + 1] = a end
  end
  local first = redis.call('ZRANGE', DL, 0, 0, 'WITHSCORES')
  local next_deadline = ''
  if first[2] then next_deadline = first[2] end
  local observed = {}
  if seen then observed[1] = availability(seen) end
  return {code, value or {}, swept or {}, av, next_deadline, observed}
end

local known_event -- nil until asked; upsert sets it when it names the event
local function event_exists()
  if known_event == nil then known_event = redis.call('HEXISTS', EV, 'name') == 1 end
  return known_event
end
