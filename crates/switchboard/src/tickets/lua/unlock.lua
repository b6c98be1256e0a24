-- unlock: ARGV[4] user, [5] category id. Only an active hold can be unlocked.
local user, cat = ARGV[4], ARGV[5]
local swept = sweep()
local l = redis.call('HGET', user_key(user), cat)
if not l then return finish('no_hold', {}, swept) end
if redis.call('HGET', hold_key(l), 'status') == 'confirmed' then
  return finish('confirmed', {l}, swept)
end
local r = end_hold(l, 'released')
if not r then return finish('no_hold', {}, swept) end
return finish('ok', r, swept)
