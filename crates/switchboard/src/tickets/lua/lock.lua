-- lock: {event id, category id, user, session, quantity, expiresAt, node id, now}.
-- Quantity bounds are checked by the caller first. Answers code, value.
local function op_lock(a)
  local ev, cat, user, sess, qty, expires, node, now =
    a[1], a[2], a[3], a[4], tonumber(a[5]), a[6], a[7], a[8]
  if not event_exists() then return 'unknown_event', {} end
  local s = seats(cat)
  if not s then return 'unknown_category', {} end
  local uk = user_key(user)
  local existing = redis.call('HGET', uk, cat)
  if existing then return 'already_holding', {existing} end
  local free = s.avail - s.held
  if free < 0 then free = 0 end
  if qty > free then return 'not_enough', {tostring(free)} end
  local l
  repeat
    local seq = redis.call('HINCRBY', EV, 'seq', 1)
    l = 'lock_e' .. ev .. '_' .. seq .. '_' .. now
  until redis.call('EXISTS', hold_key(l)) == 0 and redis.call('HEXISTS', B .. 'ended', l) == 0
  redis.call('HSET', hold_key(l), 'user', user, 'cat', cat, 'qty', a[5], 'sess', sess,
    'node', node, 'created', now, 'expires', expires, 'status', 'active')
  if redis.call('EXISTS', uk) == 0 then count('n_users', 1) end
  redis.call('HSET', uk, cat, l)
  redis.call('ZADD', sess_key(sess), 0, l)
  redis.call('ZADD', node_key(node), 0, l)
  redis.call('ZADD', DL, expires, l)
  redis.call('ZADD', IDS, 0, l)
  set_seats(cat, 'held', s.held + qty)
  count('n_live', 1)
  touch(cat)
  return 'ok', {l, now, expires}
end
