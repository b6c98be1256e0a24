-- sweep: claims this event's due holds (expired exactly once, by whoever runs first).
return finish('ok', {}, sweep())
