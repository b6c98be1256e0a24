-- lock: ARGV[4] event id, [5] category id, [6] user, [7] session, [8] quantity,
-- [9] expiresAt, [10] node id. Quantity bounds are checked by the caller first.
local ev, cat, user, sess, qty, expires, node =
  ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10]
local swept = sweep()
if not event_exists() then return finish('unknown_event', {}, swept) end
local ck = cat_key(cat)
-- Every category hash has `avail` and `held` (upsert writes both): none means unknown.
local seats = redis.call('HMGET', ck, 'avail', 'held')
if not seats[1] then return finish('unknown_category', {}, swept) end
local uk = user_key(user)
local existing = redis.call('HGET', uk, cat)
if existing then return finish('already_holding', {existing}, swept, cat) end
local free = tonumber(seats[1]) - tonumber(seats[2])
if free < 0 then free = 0 end
if qty > free then return finish('not_enough', {tostring(free)}, swept, cat) end
local l
repeat
  local seq = redis.call('HINCRBY', EV, 'seq', 1)
  l = 'lock_e' .. ev .. '_' .. seq .. '_' .. ARGV[3]
until redis.call('EXISTS', hold_key(l)) == 0 and redis.call('HEXISTS', B .. 'ended', l) == 0
redis.call('HSET', hold_key(l), 'user', user, 'cat', cat, 'qty', ARGV[8], 'sess', sess,
  'node', node, 'created', ARGV[3], 'expires', expires, 'status', 'active')
if redis.call('EXISTS', uk) == 0 then redis.call('HINCRBY', EV, 'n_users', 1) end
redis.call('HSET', uk, cat, l)
redis.call('ZADD', sess_key(sess), 0, l)
redis.call('ZADD', node_key(node), 0, l)
redis.call('ZADD', DL, expires, l)
redis.call('ZADD', IDS, 0, l)
redis.call('HINCRBY', ck, 'held', qty)
redis.call('HINCRBY', EV, 'n_live', 1)
touch(cat)
return finish('ok', {l, ARGV[3], expires}, swept)
