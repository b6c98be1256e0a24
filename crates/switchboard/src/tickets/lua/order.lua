-- order: ARGV[4] 'completed' or 'cancelled', [5] order id, [6] category id, [7] quantity,
-- [8] user. The dedupe record is written by this same script, with the effect.
local kind, order_id, cat, qty, user = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local swept = sweep()
local done = redis.call('HGET', B .. 'orders', order_id)
if done then return finish('already', {done}, swept) end
if kind == 'completed' and qty == 0 then return finish('invalid_quantity', {}, swept) end
local l = redis.call('HGET', user_key(user), cat)
local s = seats(cat)
if not l or not s then return finish('no_matching_hold', {}, swept) end
local r
if kind == 'completed' then
  -- The order may use its hold's seats plus free ones, never seats held by others.
  local avail = s.avail
  local others = s.held - tonumber(redis.call('HGET', hold_key(l), 'qty'))
  if others < 0 then others = 0 end
  local sellable = avail - others
  if sellable < 0 then sellable = 0 end
  if qty > sellable then return finish('not_enough', {tostring(sellable)}, swept) end
  r = end_hold(l, 'completed')
  set_seats(cat, 'avail', avail - qty)
else
  r = end_hold(l, 'released')
end
remember(B .. 'orders', B .. 'ordersq', order_id, kind)
return finish('ok', r, swept)
