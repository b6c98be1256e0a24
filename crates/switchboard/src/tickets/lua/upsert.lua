-- upsert: ARGV[4] 'seed' (only if the event is new) or 'upsert', [5] event name, then
-- per category 5 values: id, name, price, total, available. Validated by the caller.
-- Categories not listed are kept; so are holds, even if capacity shrinks below them.
local swept = sweep()
if ARGV[4] == 'seed' and event_exists() then return finish('exists', {}, swept) end
-- What the sweep changed is written first; the categories written here are read again.
flush()
redis.call('HSET', EV, 'name', ARGV[5])
known_event = true
for i = 6, #ARGV, 5 do
  local c = ARGV[i]
  local ck = cat_key(c)
  redis.call('HSET', ck, 'name', ARGV[i + 1], 'price', ARGV[i + 2], 'total', ARGV[i + 3],
    'avail', ARGV[i + 4])
  redis.call('HSETNX', ck, 'held', 0)
  redis.call('SADD', B .. 'cats', c)
  cats[c] = nil
  touch(c)
end
return finish('ok', {}, swept)
