-- ops: one event's lock and unlock operations, run in order after one claim of its due
-- holds; what they changed is answered once (one version bump per touched category).
-- ARGV[4] = how many operations; then each one's kind and arguments:
--   'lock' and op_lock's eight; 'unlock', user, category id; 'release', 'session' or
--   'node', its id (a release goes in its event's queue so that it runs after the
--   locks its session sent before it ended).
-- Reply: finish's, with the value replaced by one {code, value, {availability}} per
-- operation, in order: the availability of the operation's category once the whole
-- batch ran (versions already bumped), so every answer carries a state that existed.
-- Every operation is read and checked before any runs: a malformed batch changes nothing.
local n = tonumber(ARGV[4])
local ops, i = {}, 5
for k = 1, n do
  local kind = ARGV[i]
  if kind == 'lock' then
    ops[k] = {kind, {ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
      ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]}, ARGV[i + 2]}
    i = i + 9
  elseif kind == 'unlock' then
    ops[k] = {kind, {ARGV[i + 1], ARGV[i + 2]}, ARGV[i + 2]}
    i = i + 3
  elseif kind == 'release' then
    ops[k] = {kind, {ARGV[i + 1], ARGV[i + 2]}, nil}
    i = i + 3
  else
    return redis.error_reply('unknown operation')
  end
end
local swept = sweep()
local results = {}
for k = 1, n do
  local op, code, value = ops[k]
  if op[1] == 'lock' then
    code, value = op_lock(op[2])
  elseif op[1] == 'unlock' then
    code, value = op_unlock(op[2][1], op[2][2])
  else
    code, value = op_release(op[2][1], op[2][2])
  end
  results[k] = {code, value}
end
local reply = finish('ok', {}, swept)
local seen = {}
for k = 1, n do
  local c = ops[k][3]
  if c == nil then
    results[k][3] = {}
  else
    if seen[c] == nil then seen[c] = availability(c) or false end
    results[k][3] = seen[c] and {seen[c]} or {}
  end
end
reply[2] = results
return reply
