// The ticket page: the platform's ticket contract over Switchboard's plain WebSocket
// endpoint `/ws` (JSON frames `{event, data, ack}`; answers `{ack, data}`; pushes
// `{event, data, room?, offset?}`), with the browser's own WebSocket. No library.
//
// Holds belong to the connection that made them: the server releases them when that
// connection ends (or at `expiresAt`). After a reconnect the page asks for the user's
// holds again and shows what is left.
"use strict";

(() => {
  const { $, el, fetchJson, backoffDelay, fmt, clock, notice } = window.SB;

  const NAME_KEY = "switchboard.displayName";
  const TOKEN_KEY = "switchboard.token";
  const REQUEST_TIMEOUT_MS = 10_000;
  const SOON_MS = 30_000;

  const s = {
    info: null, // {devMode, devModeReason, auth}
    events: [], // the catalog: [{id, name, categories: [{id, name, price, totalSeats, availableSeats}]}]
    ws: null,
    wanted: false, // the visitor wants a connection: drives automatic reconnects
    attempt: 0,
    retryTimer: 0,
    retryAt: 0,
    lastClose: "",
    nextAck: 1,
    pending: new Map(), // ack id -> {resolve, reject, timer}
    clientId: null,
    userId: null,
    joined: null, // event id of the joined room
    avail: new Map(), // "event:category" -> {availableTickets, lockedTickets, totalTickets}
    holds: new Map(), // lockId -> hold
    skew: 0, // server clock minus this browser's clock, ms
    lastRefusal: null, // the message of the last refused request
  };

  const key = (ev, cat) => `${ev}:${cat}`;
  const serverNow = () => Date.now() + s.skew;
  const connected = () => s.ws !== null && s.ws.readyState === WebSocket.OPEN && s.clientId;

  // ---- status and notices ----------------------------------------------------------

  /** The live status line; unchanged text is not rewritten (screen readers re-announce). */
  function setStatus(state, text) {
    $("status").dataset.state = state;
    if ($("status-text").textContent !== text) $("status-text").textContent = text;
    if (state !== "reconnecting") $("retry").textContent = "";
    const online = state === "online";
    for (const id of ["lock", "unlock", "my-holds"]) $(id).disabled = !online;
    $("connect").disabled = state !== "offline" && state !== "refused";
    $("avail-caption").textContent = online
      ? "Live: updates as anyone holds or releases seats."
      : s.avail.size ? "Not live: as of the last connection." : "Not live: connect to follow the seats.";
    $("disconnect").disabled = !(state === "online" || state === "connecting" || state === "reconnecting");
    $("display-name").disabled = state !== "offline" && state !== "refused";
    $("token").disabled = $("display-name").disabled;
    $("session-id").textContent = online ? s.clientId : "—";
    $("user-id").textContent = online ? s.userId : "—";
  }

  const connNotice = (tone, text, action) => notice($("conn-notice"), tone, text, action);
  const holdNotice = (tone, text) => notice($("hold-notice"), tone, text);

  // ---- catalog and pickers -----------------------------------------------------------

  const selectedEvent = () => s.events.find((e) => String(e.id) === $("event").value);
  const categoryOf = (ev, cat) =>
    s.events.find((e) => e.id === ev)?.categories.find((c) => c.id === cat);
  const categoryName = (ev, cat) => categoryOf(ev, cat)?.name ?? `category ${cat}`;

  async function loadCatalog() {
    const { events } = await fetchJson("/api/events");
    s.events = events;
    const picker = $("event");
    const before = picker.value;
    picker.replaceChildren(...events.map((e) => el("option", { value: String(e.id) }, e.name)));
    if (events.some((e) => String(e.id) === before)) picker.value = before;
    fillCategories();
  }

  function fillCategories() {
    const ev = selectedEvent();
    const picker = $("category");
    const before = picker.value;
    const cats = ev ? ev.categories : [];
    picker.replaceChildren(
      ...cats.map((c) => el("option", { value: String(c.id) }, `${c.name} · ${money(c.price)}`)),
    );
    if (cats.some((c) => String(c.id) === before)) picker.value = before;
    $("event-name").textContent = ev ? `· ${ev.name}` : "";
    renderAvailability();
  }

  const moneyFormat = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });
  const money = (n) => moneyFormat.format(n);

  // ---- availability ------------------------------------------------------------------

  function renderAvailability() {
    const ev = selectedEvent();
    const rows = (ev ? ev.categories : []).map((c) => {
      const row = el("tr", { dataset: { category: String(c.id) } },
        el("th", { scope: "row" }, c.name),
        el("td", { className: "num price-col" }, money(c.price)),
        el("td", { className: "num available" }, "—"),
        el("td", { className: "num held" }, "—"),
        el("td", { className: "num total" }, fmt(c.totalSeats)),
        el("td", { className: "bar-col" }, el("div", { className: "seatbar", "aria-hidden": "true" },
          el("span", { className: "free" }), el("span", { className: "held" }))),
      );
      const a = s.avail.get(key(ev.id, c.id));
      if (a) fillRow(row, a);
      return row;
    });
    $("availability-rows").replaceChildren(...rows);
  }

  function fillRow(row, a) {
    row.querySelector(".available").textContent = fmt(a.availableTickets);
    row.querySelector(".held").textContent = fmt(a.lockedTickets);
    row.querySelector(".total").textContent = fmt(a.totalTickets);
    const total = Math.max(1, a.totalTickets);
    row.querySelector(".seatbar .free").style.width = `${(100 * a.availableTickets) / total}%`;
    row.querySelector(".seatbar .held").style.width = `${(100 * a.lockedTickets) / total}%`;
  }

  function onAvailability(a) {
    const k = key(a.eventId, a.categoryId);
    const before = s.avail.get(k);
    s.avail.set(k, a);
    const ev = selectedEvent();
    if (!ev || ev.id !== a.eventId) return;
    const row = $("availability-rows").querySelector(`tr[data-category="${a.categoryId}"]`);
    if (!row) return;
    fillRow(row, a);
    if (before && before.availableTickets !== a.availableTickets) {
      row.classList.remove("flash");
      void row.offsetWidth; // restart the animation
      row.classList.add("flash");
      $("avail-live").textContent =
        `${categoryName(a.eventId, a.categoryId)}: ${fmt(a.availableTickets)} available`;
    }
  }

  // ---- holds ---------------------------------------------------------------------------

  function setHolds(list) {
    s.holds = new Map(list.filter((h) => h.status === "active" || h.status === "confirmed")
      .map((h) => [h.lockId, h]));
    renderHolds();
  }

  function renderHolds() {
    const items = [...s.holds.values()].sort((a, b) => a.expiresAt - b.expiresAt).map((h) => {
      const cat = categoryOf(h.eventId, h.categoryId);
      const eventName = s.events.find((e) => e.id === h.eventId)?.name ?? `Event ${h.eventId}`;
      const release = el("button", { type: "button", className: "secondary" }, "Release");
      release.setAttribute("aria-label", `Release ${h.quantity} ${cat?.name ?? ""} ticket(s)`);
      release.addEventListener("click", () => unlock(h.eventId, h.categoryId));
      release.disabled = !connected();
      const label = h.status === "confirmed" ? "Order pending" : "Held";
      return el("li", { className: "hold", dataset: { lock: h.lockId } },
        el("span", { className: "what" }, `${label}: ${h.quantity} × ${cat?.name ?? h.categoryId}`),
        el("span", { className: "countdown", role: "timer", "aria-label": "time left" }, ""),
        el("progress", { max: h.expiresAt - h.createdAt, value: 0, "aria-hidden": "true" }),
        el("span", { className: "meta" }, `${eventName} · until ${new Date(h.expiresAt - s.skew)
          .toLocaleTimeString()} · lock ${h.lockId}`, " ", release),
      );
    });
    $("holds").replaceChildren(...items);
    $("no-holds").hidden = items.length > 0;
    tick();
  }

  /** Once per 250 ms: countdowns, expiry, and the reconnect countdown. */
  function tick() {
    const now = serverNow();
    for (const li of $("holds").children) {
      const h = s.holds.get(li.dataset.lock);
      if (!h) continue;
      const left = h.expiresAt - now;
      li.querySelector(".countdown").textContent = clock(left);
      li.querySelector("progress").value = Math.max(0, left);
      li.classList.toggle("soon", left <= SOON_MS);
    }
    for (const h of [...s.holds.values()]) {
      if (h.expiresAt <= now) {
        s.holds.delete(h.lockId);
        holdNotice("warn", `Your hold on ${h.quantity} × ${categoryName(h.eventId, h.categoryId)} ` +
          "expired; the seats are back on sale.");
        renderHolds();
        // The server expires it at the same instant; ask for the truth a moment later.
        setTimeout(() => { if (connected()) refreshHolds(false).catch(() => {}); }, 500);
      }
    }
    if (s.retryTimer) {
      const secs = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
      $("retry").textContent = `Next attempt in ${secs} s (attempt ${s.attempt}).`;
    }
  }

  // ---- the connection --------------------------------------------------------------------

  function request(event, data) {
    return new Promise((resolve, reject) => {
      if (!s.ws || s.ws.readyState !== WebSocket.OPEN) {
        reject(new Error("Not connected"));
        return;
      }
      const ack = s.nextAck++;
      const timer = setTimeout(() => {
        s.pending.delete(ack);
        reject(new Error("The server did not answer in time"));
      }, REQUEST_TIMEOUT_MS);
      s.pending.set(ack, { resolve, reject, timer });
      s.ws.send(JSON.stringify({ event, data, ack }));
    });
  }

  function failPending(why) {
    for (const p of s.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(why));
    }
    s.pending.clear();
  }

  function credentials() {
    if (s.info.devMode) {
      const name = $("display-name").value.trim();
      if (!name) return { error: "Choose a display name first." };
      return { url: `/ws?userId=${encodeURIComponent(name)}` };
    }
    const token = $("token").value.trim();
    if (!token) return { error: "Paste an access token first." };
    return { url: "/ws", protocols: [token] };
  }

  function open() {
    clearTimeout(s.retryTimer);
    s.retryTimer = 0;
    const creds = credentials();
    if (creds.error) {
      s.wanted = false;
      setStatus("offline", "Not connected");
      connNotice("bad", creds.error);
      return;
    }
    const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${creds.url}`;
    let ws;
    try {
      ws = creds.protocols ? new WebSocket(wsUrl, creds.protocols) : new WebSocket(wsUrl);
    } catch (err) {
      s.wanted = false;
      setStatus("refused", "Cannot connect");
      connNotice("bad", `That token cannot be sent (${err.message}).`);
      return;
    }
    s.ws = ws;
    setStatus(s.attempt ? "reconnecting" : "connecting", s.attempt ? "Reconnecting…" : "Connecting…");
    ws.addEventListener("message", (e) => ws === s.ws && onMessage(e.data));
    ws.addEventListener("close", (e) => ws === s.ws && onClose(e));
  }

  function onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.ack !== undefined && !msg.event) {
      const p = s.pending.get(msg.ack);
      if (p) {
        s.pending.delete(msg.ack);
        clearTimeout(p.timer);
        p.resolve(msg.data ?? {});
      }
      return;
    }
    const data = msg.data ?? {};
    switch (msg.event) {
      case "connected":
        s.clientId = data.clientId;
        s.userId = data.userId;
        onConnected();
        break;
      case "availability-update":
        onAvailability(data);
        break;
      case "error":
        // Bad input is answered through the ack and also as an `error` event: say it once.
        if (data.message !== s.lastRefusal) holdNotice("bad", data.message ?? "The server refused that.");
        break;
      case "order-completed":
      case "order-cancelled":
        holdNotice(msg.event === "order-completed" ? "ok" : "warn", data.message ?? msg.event);
        refreshHolds(false).catch(() => {});
        break;
      case "event-cancelled":
        holdNotice("bad", data.message ?? `Event ${data.eventId} was cancelled.`);
        refreshHolds(false).catch(() => {});
        break;
      default:
        break;
    }
  }

  async function onConnected() {
    const wasReconnect = s.attempt > 0;
    const heldBefore = s.holds.size;
    s.attempt = 0;
    setStatus("online", "Connected");
    connNotice(wasReconnect ? "ok" : "", wasReconnect ? "Reconnected." : "");
    try {
      await syncClock();
      if (wasReconnect) await loadCatalog();
      await joinSelected();
      const left = await refreshHolds(false);
      if (wasReconnect && heldBefore > left) {
        connNotice("warn", `Reconnected. ${heldBefore - left} hold(s) ended while the ` +
          "connection was down (holds end with the connection that made them).");
      }
      renderHolds();
    } catch (err) {
      connNotice("bad", err.message);
    }
  }

  /** The server's clock from a heartbeat, so countdowns match `expiresAt` exactly. */
  async function syncClock() {
    const t0 = Date.now();
    const r = await request("heartbeat", {});
    const t1 = Date.now();
    if (Number.isFinite(r.timestamp)) s.skew = r.timestamp - (t0 + t1) / 2;
  }

  async function joinSelected() {
    const ev = selectedEvent();
    if (!ev || !connected()) return;
    if (s.joined !== null && s.joined !== ev.id) {
      const old = s.joined;
      s.joined = null;
      await request("leave-event-room", { eventId: old }).catch(() => {});
    }
    const r = await request("join-event-room", { eventId: ev.id });
    if (r.success) s.joined = ev.id;
    else holdNotice("bad", r.message ?? "Could not join the event.");
  }

  function onClose(e) {
    s.ws = null;
    s.clientId = null;
    s.joined = null;
    failPending("The connection was lost");
    renderHolds();
    if (e.code === 4001 || e.code === 4003) {
      s.wanted = false;
      s.attempt = 0;
      setStatus("refused", e.code === 4003 ? "Token expired" : "Not authorized");
      connNotice("bad", e.code === 4003
        ? "Your token has expired. Paste a new one and connect again."
        : "The server refused the sign-in. Check the token and connect again.");
      return;
    }
    if (!s.wanted) {
      setStatus("offline", "Disconnected");
      return;
    }
    const why = e.reason || (e.code === 1006 ? "the server is unreachable" : `code ${e.code}`);
    scheduleReconnect(why);
  }

  function scheduleReconnect(why) {
    const delay = backoffDelay(s.attempt);
    s.attempt += 1;
    s.retryAt = Date.now() + delay;
    setStatus("reconnecting", "Reconnecting…");
    if (s.attempt === 1) {
      // Said once, with the first reason; later failed attempts only move `#retry`.
      const now = el("button", { type: "button", className: "secondary" }, "Reconnect now");
      now.addEventListener("click", () => open());
      connNotice("warn", `Connection lost: ${why}. Reconnecting automatically.`, now);
    }
    s.retryTimer = setTimeout(() => {
      s.retryTimer = 0;
      open();
    }, delay);
    tick();
  }

  function connect() {
    s.wanted = true;
    s.attempt = 0;
    if (s.info.devMode) localStorage.setItem(NAME_KEY, $("display-name").value.trim());
    else sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    connNotice("", "");
    open();
  }

  function disconnect() {
    s.wanted = false;
    clearTimeout(s.retryTimer);
    s.retryTimer = 0;
    s.attempt = 0;
    if (s.ws) s.ws.close(1000, "Disconnected by the user");
    else setStatus("offline", "Disconnected");
    connNotice("", "Disconnected. The server releases the holds of this connection.");
  }

  // ---- ticket actions ------------------------------------------------------------------

  function selection() {
    const ev = selectedEvent();
    const cat = Number($("category").value);
    return ev && Number.isInteger(cat) ? { eventId: ev.id, categoryId: cat } : null;
  }

  async function lock() {
    const sel = selection();
    const qty = Number($("quantity").value);
    if (!sel) return;
    // The upper limit is the server's (`max_hold_quantity`): it answers with the range.
    if (!Number.isInteger(qty) || qty < 1) {
      $("quantity").setAttribute("aria-invalid", "true");
      holdNotice("bad", "Quantity must be a whole number of at least 1.");
      $("quantity").focus();
      return;
    }
    $("quantity").removeAttribute("aria-invalid");
    const name = categoryName(sel.eventId, sel.categoryId);
    try {
      const r = await request("lock-tickets", { ...sel, quantity: qty });
      if (r.success) {
        await refreshHolds(false).catch(() => {});
        holdNotice("ok", `Held ${qty} × ${name}. Pay before the countdown ends.`);
      } else {
        const left = Number.isFinite(r.availableTickets) ? ` (${fmt(r.availableTickets)} available)` : "";
        s.lastRefusal = r.message;
        holdNotice("bad", `Hold refused: ${r.message}${left}.`);
      }
    } catch (err) {
      holdNotice("bad", `Hold not placed: ${err.message}.`);
    }
  }

  async function unlock(eventId, categoryId) {
    const name = categoryName(eventId, categoryId);
    try {
      const r = await request("unlock-tickets", { eventId, categoryId });
      await refreshHolds(false).catch(() => {});
      if (r.success) holdNotice("ok", `${r.message} (${name}).`);
      else holdNotice("bad", `Nothing released: ${r.message}.`);
    } catch (err) {
      holdNotice("bad", `Release failed: ${err.message}.`);
    }
  }

  /** Asks for the user's holds; returns how many are live. */
  async function refreshHolds(announce) {
    const r = await request("get-my-locks", {});
    setHolds(r.locks ?? []);
    if (announce) {
      holdNotice("", s.holds.size ? `You hold seats in ${s.holds.size} categor${s.holds.size === 1 ? "y" : "ies"}.`
        : "You hold no seats.");
    }
    return s.holds.size;
  }

  // ---- start ---------------------------------------------------------------------------

  async function start() {
    setStatus("offline", "Not connected");
    $("signin").addEventListener("submit", (e) => {
      e.preventDefault();
      connect();
    });
    $("disconnect").addEventListener("click", disconnect);
    $("hold-form").addEventListener("submit", (e) => {
      e.preventDefault();
      lock();
    });
    $("unlock").addEventListener("click", () => {
      const sel = selection();
      if (sel) unlock(sel.eventId, sel.categoryId);
    });
    $("my-holds").addEventListener("click", () =>
      refreshHolds(true).catch((err) => holdNotice("bad", err.message)));
    $("event").addEventListener("change", () => {
      fillCategories();
      joinSelected().catch((err) => holdNotice("bad", err.message));
    });
    window.addEventListener("online", () => {
      if (s.retryTimer) open();
    });
    setInterval(tick, 250);

    try {
      [s.info] = await Promise.all([fetchJson("/api/session-info"), loadCatalog()]);
    } catch (err) {
      connNotice("bad", `Cannot reach the server (${err.message}). Reload the page to try again.`);
      return;
    }
    if (s.info.devMode) {
      $("demo-signin").hidden = false;
      if (s.info.devModeReason === "explicit") {
        $("demo-hint").textContent = "Development mode (dev_mode = true): the server trusts " +
          "this name from any address it listens on. Never run it this way where others can reach it.";
      }
      $("display-name").value = localStorage.getItem(NAME_KEY) ||
        `guest-${Math.floor(1000 + Math.random() * 9000)}`;
    } else {
      $("jwt-signin").hidden = false;
      $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    }
    // Live on load: the demo identity in development mode, the token this tab stored
    // otherwise. Disconnect stays there (for this page's lifetime).
    const hasCredentials = s.info.devMode ? $("display-name").value.trim() : $("token").value;
    if (hasCredentials) connect();
  }

  start();
})();
