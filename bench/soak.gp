# The soak's samples (bench/soak writes the CSV): server RSS, open file descriptors,
# tokio tasks and hub rooms over time, and the clients online for context.
# Variables: csv, png, clients, minutes.
set datafile separator ','
set terminal pngcairo size 1200,900 font 'sans,10'
set output png
set multiplot layout 2,2 title sprintf('Switchboard soak: %s churning Socket.IO clients + SSE readers, %s minutes (release build)', clients, minutes)
set xlabel 'minutes'
set grid
set key top left
set yrange [0:*]
set title 'server RSS (MiB)'
plot csv using ($1/60):2 skip 1 with lines lw 2 title 'RSS'
set title 'open file descriptors'
plot csv using ($1/60):3 skip 1 with lines lw 2 title 'fds', \
     csv using ($1/60):($10+$11) skip 1 with lines dt 2 title 'clients online (generator)'
set title 'tokio tasks'
plot csv using ($1/60):5 skip 1 with lines lw 2 title 'tasks'
set title 'hub rooms / active holds'
plot csv using ($1/60):6 skip 1 with lines lw 2 title 'rooms', \
     csv using ($1/60):9 skip 1 with lines dt 2 title 'active holds'
unset multiplot
