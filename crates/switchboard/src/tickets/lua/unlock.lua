-- unlock: user, category id. Only an active hold can be unlocked. Answers code, value.
local function op_unlock(user, cat)
  local l = redis.call('HGET', user_key(user), cat)
  if not l then return 'no_hold', {} end
  local h = read_hold(l)
  if h and h.status == 'confirmed' then return 'confirmed', {l} end
  local r = end_hold(l, 'released', h)
  if not r then return 'no_hold', {} end
  return 'ok', r
end
