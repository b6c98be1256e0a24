-- release: 'session' or 'node', its id. Ends the *active* holds of a session that ended
-- (or of every session of a dead node); confirmed holds wait for their order.
-- Answers code, value.
local function op_release(by, id)
  local index
  if by == 'node' then index = node_key(id) else index = sess_key(id) end
  local ids = {}
  for _, l in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    if redis.call('HGET', hold_key(l), 'status') == 'active' then ids[#ids + 1] = l end
  end
  return 'ok', end_all(ids, 'released')
end
