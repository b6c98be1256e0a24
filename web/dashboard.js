// The dashboard: one small JSON a second from `GET /dashboard/stream` (SSE, event
// `stats`), however many clients the server has. Totals are monotonic counters; rates are
// computed here from their deltas. Charts are drawn on <canvas> from a ring buffer of the
// last five minutes. Outside development mode the feed needs the API key (asked for on
// the page, kept in this tab). Without the feed (no key, a refused key, an older server)
// the page polls the public `/stats` once a second instead and says so; `/stats` has no
// message counters or room list.
"use strict";

(() => {
  const { $, el, fetchJson, backoffDelay, fmt } = window.SB;

  const WINDOW_MS = 5 * 60_000;
  const CAPACITY = 360; // samples kept: a bit over five minutes at one a second
  const STALE_MS = 5_000;
  const COLORS = ["#2447b8", "#d98a00", "#16883f", "#a3141f", "#6b3fa0"];

  /** Fixed-size ring of samples, oldest first when read. */
  class Ring {
    constructor(size) {
      this.buf = new Array(size);
      this.start = 0;
      this.length = 0;
    }
    push(v) {
      const size = this.buf.length;
      this.buf[(this.start + this.length) % size] = v;
      if (this.length < size) this.length += 1;
      else this.start = (this.start + 1) % size;
    }
    *[Symbol.iterator]() {
      for (let i = 0; i < this.length; i += 1) yield this.buf[(this.start + i) % this.buf.length];
    }
    clear() {
      this.start = 0;
      this.length = 0;
    }
  }

  const samples = new Ring(CAPACITY);
  let prev = null; // the previous stats, for rates
  let lastAt = 0; // when (this browser's clock) the last stats arrived
  let mode = "stream"; // or "polling"

  /** The live status line; unchanged text is not rewritten (screen readers re-announce). */
  function setStatus(state, text) {
    $("status").dataset.state = state;
    if ($("status-text").textContent !== text) $("status-text").textContent = text;
  }

  /** Every connection once (`socketioPolling` is a part of `socketio`). */
  const total = (c) => ["socketio", "ws", "sse", "pusher"].reduce((a, k) => a + (Number(c[k]) || 0), 0);

  function show(id, value, text) {
    const node = $(id);
    node.dataset.value = String(value);
    node.textContent = text ?? fmt(value);
  }

  /** One `stats` message: tiles now, a sample for the charts. */
  function onStats(st) {
    lastAt = Date.now();
    $("updated").textContent = `Updated ${new Date(lastAt).toLocaleTimeString()}`;
    const c = st.connections ?? {};
    let inRate = NaN;
    let outRate = NaN;
    if (st.messages && prev?.messages && st.at > prev.at) {
      const dt = (st.at - prev.at) / 1000;
      const din = st.messages.in - prev.messages.in;
      const dout = st.messages.out - prev.messages.out;
      // A counter that went down means the server restarted: no rate for this step.
      if (din >= 0 && dout >= 0) {
        inRate = din / dt;
        outRate = dout / dt;
      }
    }
    if (prev && st.at < prev.at) samples.clear(); // a clock jump or a restart
    prev = st;

    show("t-connections", total(c));
    $("t-by-transport").textContent =
      `Socket.IO ${fmt(c.socketio)} · WebSocket ${fmt(c.ws)} · SSE ${fmt(c.sse)} · Pusher ${fmt(c.pusher)}`;
    show("t-rooms", st.rooms);
    show("t-members", st.members);
    const rate = (r) => (Number.isFinite(r) ? fmt(Math.round(r)) : st.messages ? "…" : "n/a");
    show("t-in", inRate, rate(inRate));
    show("t-out", outRate, rate(outRate));
    const h = st.holds ?? {};
    show("t-holds", h.active);
    $("t-hold-statuses").textContent =
      `confirmed ${fmt(h.confirmed)} · expired ${fmt(h.expired)} · released ${fmt(h.released)} · completed ${fmt(h.completed)}`;
    if (st.broker) {
      show("t-broker", 0, st.broker.state ?? "unknown");
      $("t-broker-detail").textContent = st.broker.lastError ? `last error: ${st.broker.lastError}` : "";
    } else {
      show("t-broker", 0, "none");
      $("t-broker-detail").textContent = "no broker configured";
    }
    renderRooms(st.topRooms);

    samples.push({
      at: st.at,
      conn: [c.socketio ?? 0, c.ws ?? 0, c.sse ?? 0, c.pusher ?? 0],
      msg: [inRate, outRate],
      holds: [h.active ?? 0, h.confirmed ?? 0],
    });
    draw();
  }

  function renderRooms(top) {
    if (!Array.isArray(top)) {
      $("top-rooms").replaceChildren();
      $("no-rooms").hidden = false;
      $("no-rooms").textContent = mode === "polling" ? "Room list needs the live feed." : "No rooms yet.";
      return;
    }
    const rows = top.slice(0, 10).map((r) =>
      el("tr", {}, el("td", {}, r.room), el("td", { className: "num" }, fmt(r.members))));
    $("top-rooms").replaceChildren(...rows);
    $("no-rooms").hidden = rows.length > 0;
    $("no-rooms").textContent = "No rooms yet.";
  }

  // ---- charts ----------------------------------------------------------------------------

  /** A round axis maximum at or above `v` (1, 2, 5 × 10^n). */
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart(canvas, pick, names, summaryId) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const hgt = canvas.clientHeight;
    if (!w || !hgt) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(hgt * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);

    const rows = [...samples];
    const end = rows.length ? rows[rows.length - 1].at : Date.now();
    // The x axis spans what there is, from one minute up to five.
    const span = Math.min(WINDOW_MS, Math.max(60_000, rows.length ? end - rows[0].at : 0));
    const left = 44;
    const right = w - 6;
    const top = 8;
    const bottom = hgt - 20;
    let max = 0;
    for (const r of rows) for (const v of pick(r)) if (Number.isFinite(v)) max = Math.max(max, v);
    max = niceMax(max);

    g.font = "12px system-ui, sans-serif";
    g.fillStyle = "#4a4f66";
    g.strokeStyle = "#d5d8e3";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const f of [0, 0.5, 1]) {
      const y = bottom - f * (bottom - top);
      g.beginPath();
      g.moveTo(left, Math.round(y) + 0.5);
      g.lineTo(right, Math.round(y) + 0.5);
      g.stroke();
      g.fillText(fmt(Math.round(max * f * 100) / 100), left - 6, y);
    }
    g.textBaseline = "alphabetic";
    g.textAlign = "left";
    g.fillText(`−${Math.round(span / 60_000)} min`, left, hgt - 4);
    g.textAlign = "right";
    g.fillText("now", right, hgt - 4);

    const x = (at) => right - ((end - at) / span) * (right - left);
    const y = (v) => bottom - (v / max) * (bottom - top);
    const series = rows.length ? pick(rows[0]).length : 0;
    g.lineWidth = 2;
    g.lineJoin = "round";
    for (let s = 0; s < series; s += 1) {
      g.strokeStyle = COLORS[s];
      g.beginPath();
      let pen = false;
      let dot = null;
      for (const r of rows) {
        if (end - r.at > span) continue;
        const v = pick(r)[s];
        if (!Number.isFinite(v)) {
          pen = false;
          continue;
        }
        if (pen) g.lineTo(x(r.at), y(v));
        else g.moveTo(x(r.at), y(v));
        pen = true;
        dot = [x(r.at), y(v)];
      }
      g.stroke();
      if (dot) {
        // The latest value, visible even before there is a line.
        g.fillStyle = COLORS[s];
        g.beginPath();
        g.arc(dot[0], dot[1], 3, 0, 2 * Math.PI);
        g.fill();
      }
    }
    const last = rows.length ? pick(rows[rows.length - 1]) : [];
    $(summaryId).textContent = names
      .map((n, i) => `${n}: ${Number.isFinite(last[i]) ? fmt(Math.round(last[i])) : "no data"}`)
      .join(", ");
  }

  let drawQueued = false;
  function draw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      drawChart($("c-conn"), (r) => r.conn, ["Socket.IO", "WebSocket", "SSE", "Pusher"], "c-conn-sum");
      drawChart($("c-msg"), (r) => r.msg, ["in per second", "out per second"], "c-msg-sum");
      drawChart($("c-holds"), (r) => r.holds, ["active", "confirmed"], "c-holds-sum");
    });
  }

  // ---- the feed --------------------------------------------------------------------------

  const KEY_KEY = "switchboard.apiKey";
  let attempt = 0;
  let everStreamed = false;
  let source = null;
  let pollTimer = 0;

  /** The SSE feed; `key` is the API key a server outside development mode asks for. */
  function startStream(key) {
    stopPolling();
    if (source) source.close();
    mode = "stream";
    const url = key ? `/dashboard/stream?key=${encodeURIComponent(key)}` : "/dashboard/stream";
    const es = new EventSource(url);
    source = es;
    es.addEventListener("open", () => {
      attempt = 0;
      setStatus("online", "Live");
    });
    es.addEventListener("stats", (e) => {
      everStreamed = true;
      let st;
      try {
        st = JSON.parse(e.data);
      } catch {
        return;
      }
      setStatus("online", "Live");
      onStats(st);
    });
    es.addEventListener("error", () => {
      if (es !== source) return;
      if (es.readyState !== EventSource.CLOSED) {
        // The browser reconnects by itself (the server sent `retry:`).
        setStatus("reconnecting", "Live feed lost; reconnecting…");
        return;
      }
      es.close();
      source = null;
      if (!everStreamed) {
        // Refused (wrong key) or not there (an older server): /stats is public.
        startPolling(key
          ? "The live feed refused this key; polling /stats once a second"
          : "No live feed on this server; polling /stats once a second");
        return;
      }
      setStatus("reconnecting", "Live feed lost; reconnecting…");
      setTimeout(() => startStream(key), backoffDelay(attempt++));
    });
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    pollTimer = 0;
  }

  function startPolling(why) {
    stopPolling();
    mode = "polling";
    setStatus("connecting", why);
    const poll = async () => {
      try {
        const st = await fetchJson("/stats", 5_000);
        if (mode !== "polling") return;
        onStats({
          at: Date.now(),
          connections: st.connections,
          rooms: st.hub?.rooms,
          members: st.hub?.members,
          messages: null,
          holds: st.ticketLocks?.locksByStatus,
          broker: st.amqp ? { state: st.amqp.state, lastError: st.amqp.lastError } : null,
          topRooms: null,
        });
        setStatus("online", why);
      } catch (err) {
        setStatus("reconnecting", `Cannot reach the server (${err.message}); retrying`);
      }
      if (mode === "polling") pollTimer = setTimeout(poll, 1_000);
    };
    poll();
  }

  async function start() {
    let info = { devMode: true };
    try {
      info = await fetchJson("/api/session-info");
    } catch {
      // Try the feed anyway; its own errors say more.
    }
    if (info.devMode) {
      startStream("");
      return;
    }
    // Outside development mode the feed needs the API key (kept in this tab only).
    $("key-form").hidden = false;
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("api-key").value.trim();
      sessionStorage.setItem(KEY_KEY, key);
      everStreamed = false;
      startStream(key);
    });
    const key = sessionStorage.getItem(KEY_KEY);
    if (key) {
      $("api-key").value = key;
      startStream(key);
    } else {
      startPolling("The live feed needs the API key; polling /stats once a second meanwhile");
    }
  }

  setInterval(() => {
    if (lastAt && Date.now() - lastAt > STALE_MS) {
      setStatus("reconnecting", "No data for a few seconds; reconnecting…");
    }
  }, 1_000);
  window.addEventListener("resize", draw);
  start();
  draw();
})();
