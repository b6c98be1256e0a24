-- release: 'session' or 'node', its id. Ends the *active* holds of a session that ended
-- (or of every session of a dead node); confirmed holds wait for their order.
-- Answers code, value.
local function op_release(by, id)
  local index
  if by == 'node' then index = node_key(id) else index = sess_key(id) end
  local out = {}
  for _, l in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local h = read_hold(l)
    if h and h.status == 'active' then out[#out + 1] = end_hold(l, 'released', h) end
  end
  return 'ok', out
end
