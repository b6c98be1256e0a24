-- confirm: ARGV[4] lock id, [5] order deadline (now + order timeout).
local l, deadline = ARGV[4], ARGV[5]
local swept = sweep()
local h = read_hold(l)
if not h then
  local was = redis.call('HGET', B .. 'ended', l)
  if was == 'expired' then return finish('expired', {}, swept) end
  if was then return finish('ended', {was}, swept) end
  return finish('unknown_lock', {}, swept)
end
if h.status == 'confirmed' then return finish('ok', hold_reply(l, h), swept) end
if tonumber(h.expires) <= NOW then return finish('expired', {}, swept) end
redis.call('HSET', hold_key(l), 'status', 'confirmed', 'expires', deadline)
redis.call('ZADD', DL, deadline, l)
count('n_confirmed', 1)
h.status, h.expires = 'confirmed', deadline
return finish('ok', hold_reply(l, h), swept)
