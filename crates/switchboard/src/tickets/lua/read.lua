-- read (no writes, no sweep): ARGV[4] what: 'event' | 'user' <id> | 'holds' | 'stats'.
-- Holds past their deadline but not yet swept are left out of hold lists (a sweep would
-- end them); seat counts are as stored (the sweeper runs at each deadline).
local what = ARGV[4]
local function live(l, h) return h and tonumber(h.expires) > NOW end
if what == 'event' then
  if not event_exists() then return {} end
  local cats = {}
  for _, c in ipairs(redis.call('SMEMBERS', B .. 'cats')) do
    local v = redis.call('HMGET', cat_key(c), 'name', 'price', 'total', 'avail', 'held', 'ver')
    cats[#cats + 1] = {c, v[1], v[2], v[3], v[4], v[5], v[6] or '0'}
  end
  return {redis.call('HGET', EV, 'name'), cats}
end
if what == 'stats' then
  -- Counters are exact once the event is swept (the sweeper sweeps before it reads them).
  local v = redis.call('HMGET', EV, 'n_live', 'n_confirmed', 'n_users', 'n_expired', 'n_released', 'n_completed')
  local ncats = 0
  for _, c in ipairs(redis.call('SMEMBERS', B .. 'cats')) do
    if tonumber(redis.call('HGET', cat_key(c), 'held') or 0) > 0 then ncats = ncats + 1 end
  end
  return {tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0), ncats,
    tonumber(v[4] or 0), tonumber(v[5] or 0), tonumber(v[6] or 0)}
end
local ids
if what == 'user' then
  ids = redis.call('HVALS', user_key(ARGV[5]))
else
  ids = redis.call('ZRANGEBYSCORE', DL, '(' .. ARGV[3], '+inf')
end
local out = {}
for _, l in ipairs(ids) do
  local h = read_hold(l)
  if live(l, h) then out[#out + 1] = hold_reply(l, h) end
end
return out
