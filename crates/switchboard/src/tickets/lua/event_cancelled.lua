-- event_cancelled: ends every live hold of the event (active and confirmed), lock id order.
local swept = sweep()
return finish('ok', end_all(redis.call('ZRANGE', IDS, 0, -1), 'released'), swept)
