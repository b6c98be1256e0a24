-- release: ARGV[4] 'session' or 'node', [5] its id. Ends the *active* holds of a session
-- that ended (or of every session of a dead node); confirmed holds wait for their order.
local index
if ARGV[4] == 'node' then index = node_key(ARGV[5]) else index = sess_key(ARGV[5]) end
local swept = sweep()
local ids = {}
for _, l in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if redis.call('HGET', hold_key(l), 'status') == 'active' then ids[#ids + 1] = l end
end
return finish('ok', end_all(ids, 'released'), swept)
