-- capacity: ARGV[4] category id, [5] total seats, [6] available (unsold) seats.
local cat, total, avail = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local swept = sweep()
if not event_exists() then return finish('unknown_event', {}, swept) end
if not seats(cat) then return finish('unknown_category', {}, swept) end
if avail > total then return finish('exceeds_total', {}, swept) end
set_seats(cat, 'total', total)
set_seats(cat, 'avail', avail)
touch(cat)
return finish('ok', availability(cat), swept)
