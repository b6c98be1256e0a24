// The chat page: Switchboard's chat over the browser's own WebSocket at `/ws` (chat
// actions, README "Chat"). Messages show at once as "sending", are kept in a queue in
// localStorage until their ack, and are sent again after a reconnect with the same
// clientMsgId, so the server stores each once. No library.
"use strict";

(() => {
  const { $, el, backoffDelay } = SB;
  const NAME_KEY = "switchboard.chat.name";
  const TOKEN_KEY = "switchboard.token"; // the ticket page's: one sign-in per tab
  const QUEUE_KEY = "switchboard.chat.queue";

  const s = {
    ws: null,
    user: null,
    attempt: 0,
    nextAck: 1,
    acks: new Map(), // ack id -> resolve
    rooms: new Map(), // roomId -> {roomId, name, unread}
    room: null, // the open room's id
    messages: new Map(), // id or clientMsgId -> message shown
    presence: new Map(), // userId -> {status, lastSeen}
    typing: new Map(), // userId -> timer
    lastTyping: 0,
    oldest: null,
    hasMore: false,
    wanted: false, // the user asked to be connected
  };

  const queue = () => JSON.parse(localStorage.getItem(QUEUE_KEY) || "[]");
  const saveQueue = (q) => localStorage.setItem(QUEUE_KEY, JSON.stringify(q));

  function setStatus(state, text) {
    $("status").dataset.state = state;
    $("status-text").textContent = text;
    $("connect").disabled = state === "online";
    $("disconnect").disabled = !s.wanted;
    const open = state === "online" && s.room !== null;
    $("text").disabled = s.room === null;
    $("send").disabled = s.room === null;
    if (!open && s.room === null) $("text").value = "";
  }

  function ask(obj) {
    return new Promise((resolve, reject) => {
      if (!s.ws || s.ws.readyState !== WebSocket.OPEN) return reject(new Error("offline"));
      const ack = s.nextAck++;
      s.acks.set(ack, resolve);
      s.ws.send(JSON.stringify({ ...obj, ack }));
    });
  }

  function ago(ms) {
    const min = Math.round((Date.now() - ms) / 60000);
    if (min < 1) return "just now";
    if (min < 60) return `${min} min ago`;
    return `${Math.round(min / 60)} h ago`;
  }

  // --- rooms ---------------------------------------------------------------------------
  function renderRooms() {
    $("rooms").replaceChildren(
      ...[...s.rooms.values()].map((r) =>
        el("li", { dataset: { room: r.roomId } },
          el("button", { type: "button", "aria-current": String(r.roomId === s.room), onclick: () => openRoom(r.roomId) },
            el("span", {}, r.type === "direct" ? r.roomId.replace(/^dm:/, "").split(":").filter((u) => u !== s.user).join("") || r.name : r.name),
            el("span", { className: "unread" }, r.unread ? String(r.unread) : "")))));
  }

  async function loadRooms() {
    const list = await ask({ action: "rooms" });
    s.rooms = new Map(list.rooms.map((r) => [r.roomId, r]));
    renderRooms();
  }

  // --- messages --------------------------------------------------------------------------
  const ticks = { sending: "…", sent: "✓", delivered: "✓✓", read: "✓✓" };

  function messageNode(m) {
    const mine = m.senderId === s.user;
    return el("li", { className: mine ? "mine" : "", dataset: { id: m.id || "", client: m.clientMsgId || "", status: m.status } },
      mine ? null : el("span", { className: "who" }, m.senderId),
      el("span", { className: "text" }, m.deleted ? "(deleted)" : m.content),
      mine ? el("span", { className: "ticks", "aria-label": m.status }, ticks[m.status] || "") : null);
  }

  /** Shows or updates a message (by server id, or by clientMsgId while it is sending). */
  function show(m, { prepend = false } = {}) {
    const list = $("messages");
    const key = m.id || m.clientMsgId;
    const old = (m.clientMsgId && s.messages.get(m.clientMsgId)) || s.messages.get(key);
    const node = messageNode(m);
    if (old?.node?.isConnected) old.node.replaceWith(node);
    else if (prepend) list.prepend(node);
    else {
      const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      list.append(node);
      if (atBottom || m.senderId === s.user) list.scrollTop = list.scrollHeight;
    }
    const entry = { m, node };
    if (m.clientMsgId) s.messages.set(m.clientMsgId, entry);
    if (m.id) s.messages.set(m.id, entry);
  }

  function markRead(upTo, reader) {
    for (const { m } of new Set(s.messages.values())) {
      if (m.id && Number(m.id) <= Number(upTo) && m.senderId === s.user && reader !== s.user) {
        if (!m.readBy?.includes(reader)) m.readBy = [...(m.readBy || []), reader];
        m.status = "read";
        show(m);
      }
    }
  }

  async function readLatest() {
    const last = [...s.messages.values()].map((e) => e.m).filter((m) => m.id && m.senderId !== s.user).pop();
    if (last) await ask({ action: "read", roomId: s.room, messageId: last.id }).catch(() => {});
    const r = s.rooms.get(s.room);
    if (r) { r.unread = 0; renderRooms(); }
  }

  async function openRoom(roomId) {
    s.room = roomId;
    s.messages.clear();
    $("messages").replaceChildren();
    $("typing").textContent = "";
    renderRooms();
    const joined = await ask({ action: "join", roomId });
    if (!joined.success) return SB.notice($("notice"), "bad", joined.message);
    $("room-h").textContent = joined.room.name;
    for (const m of joined.members) {
      if (!s.presence.has(m.userId)) s.presence.set(m.userId, { status: m.online ? "online" : "offline", lastSeen: null });
    }
    s.members = joined.members.map((m) => m.userId);
    renderMembers();
    const page = await ask({ action: "history", roomId, limit: 30 });
    for (const m of page.messages) show(m);
    s.oldest = page.messages[0]?.id ?? null;
    s.hasMore = page.hasMore;
    for (const q of queue().filter((q) => q.roomId === roomId)) show({ ...q, senderId: s.user, status: "sending" });
    $("messages").scrollTop = $("messages").scrollHeight;
    setStatus("online", `Online as ${s.user}`);
    await readLatest();
  }

  async function older() {
    if (!s.hasMore || !s.oldest || s.loadingOlder) return;
    s.loadingOlder = true;
    const list = $("messages");
    const before = list.scrollHeight;
    const page = await ask({ action: "history", roomId: s.room, before: s.oldest, limit: 30 }).finally(() => (s.loadingOlder = false));
    for (const m of [...page.messages].reverse()) show(m, { prepend: true });
    s.oldest = page.messages[0]?.id ?? s.oldest;
    s.hasMore = page.hasMore;
    list.scrollTop = list.scrollHeight - before;
  }

  function renderMembers() {
    $("members").replaceChildren(...(s.members || []).map((u) => {
      const p = s.presence.get(u) || { status: "offline" };
      const seen = p.status === "offline" && p.lastSeen ? ` · last seen ${ago(p.lastSeen)}` : "";
      return el("li", { dataset: { user: u, status: p.status } },
        el("span", { className: "presence", dataset: { status: p.status }, "aria-hidden": "true" }),
        `${u}${u === s.user ? " (you)" : ""} — ${p.status}${seen}`);
    }));
  }

  // --- sending ---------------------------------------------------------------------------
  async function flush() {
    for (const q of queue()) {
      try {
        const ack = await ask({ action: "message", roomId: q.roomId, content: q.content, clientMsgId: q.clientMsgId });
        if (ack.message === "offline") return; // the connection went before the ack: keep it
        saveQueue(queue().filter((x) => x.clientMsgId !== q.clientMsgId));
        if (ack.success && q.roomId === s.room) show(ack.message);
        if (!ack.success) SB.notice($("notice"), "bad", `Not sent: ${ack.message}`);
      } catch {
        return; // offline again: the rest waits for the next connection
      }
    }
  }

  function send(content) {
    const q = { roomId: s.room, content, clientMsgId: crypto.randomUUID() };
    saveQueue([...queue(), q]);
    show({ ...q, senderId: s.user, status: "sending" });
    flush();
  }

  // --- the connection --------------------------------------------------------------------
  function onFrame(f) {
    if (f.ack !== undefined) {
      const resolve = s.acks.get(f.ack);
      s.acks.delete(f.ack);
      return resolve?.(f.data);
    }
    const d = f.data;
    switch (f.event) {
      case "connected":
        s.user = d.userId;
        s.attempt = 0;
        setStatus("online", `Online as ${s.user}`);
        loadRooms().then(() => (s.room ? openRoom(s.room) : null)).then(flush).catch(() => {});
        break;
      case "message":
        if (d.roomId === s.room) {
          show(d);
          if (d.senderId !== s.user && document.visibilityState !== "hidden") readLatest();
        } else if (s.rooms.has(d.roomId) && d.senderId !== s.user) {
          s.rooms.get(d.roomId).unread += 1;
          renderRooms();
        }
        break;
      case "message:edited":
      case "message:deleted":
        if (d.roomId === s.room) show(d);
        break;
      case "read":
        if (d.roomId === s.room) markRead(d.messageId, d.userId);
        break;
      case "room:added":
        s.rooms.set(d.roomId, { ...d, unread: 0 });
        renderRooms();
        break;
      case "typing":
      case "typing:start":
      case "typing:stop":
        if (d.roomId !== s.room || !d.userId || d.userId === s.user) break;
        clearTimeout(s.typing.get(d.userId));
        s.typing.delete(d.userId);
        if (f.event !== "typing:stop") s.typing.set(d.userId, setTimeout(() => { s.typing.delete(d.userId); renderTyping(); }, 6000));
        renderTyping();
        break;
      case "presence:update":
        s.presence.set(d.userId, { status: d.status, lastSeen: d.lastSeen });
        renderMembers();
        break;
      case "user_joined":
      case "user_left":
        if (d.roomId !== s.room) break;
        s.presence.set(d.userId, { ...(s.presence.get(d.userId) || {}), status: f.event === "user_joined" ? "online" : s.presence.get(d.userId)?.status || "offline" });
        if (!s.members?.includes(d.userId)) s.members = [...(s.members || []), d.userId];
        renderMembers();
        break;
    }
  }

  function renderTyping() {
    const who = [...s.typing.keys()];
    $("typing").textContent = who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing...`;
  }

  function connect() {
    const name = $("name").value.trim();
    if (!name) return SB.notice($("notice"), "warn", "Enter a name (or a token) first.");
    s.wanted = true;
    const token = name.split(".").length === 3;
    if (token) sessionStorage.setItem(TOKEN_KEY, name);
    else localStorage.setItem(NAME_KEY, name);
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${token ? "" : `?userId=${encodeURIComponent(name)}`}`;
    const ws = token ? new WebSocket(url, [name]) : new WebSocket(url);
    s.ws = ws;
    setStatus("connecting", "Connecting…");
    ws.onmessage = (e) => onFrame(JSON.parse(e.data));
    ws.onclose = () => {
      if (s.ws !== ws) return;
      s.ws = null;
      for (const resolve of s.acks.values()) resolve({ success: false, message: "offline" });
      s.acks.clear();
      // What the room said live is no longer known: no stale typing line or dots.
      for (const timer of s.typing.values()) clearTimeout(timer);
      s.typing.clear();
      renderTyping();
      for (const [u, p] of s.presence) if (u !== s.user) s.presence.set(u, { ...p, status: "unknown" });
      renderMembers();
      if (!s.wanted) return setStatus("offline", "Not connected");
      const wait = backoffDelay(s.attempt++);
      setStatus("offline", `Offline: reconnecting in ${Math.ceil(wait / 1000)} s (messages wait in the queue)`);
      setTimeout(() => s.wanted && !s.ws && connect(), wait);
    };
  }

  $("signin").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
  $("disconnect").addEventListener("click", () => {
    s.wanted = false;
    s.ws?.close();
    setStatus("offline", "Not connected");
  });
  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value;
    if (!text.trim() || !s.room) return;
    $("text").value = "";
    send(text);
  });
  $("text").addEventListener("input", () => {
    const now = Date.now();
    if (now - s.lastTyping < 2000 || !s.ws || s.ws.readyState !== WebSocket.OPEN) return;
    s.lastTyping = now;
    s.ws.send(JSON.stringify({ action: "typing", roomId: s.room }));
  });
  $("messages").addEventListener("scroll", () => { if ($("messages").scrollTop < 30) older(); });
  $("new-room").addEventListener("submit", async (e) => {
    e.preventDefault();
    const members = $("new-members").value.split(",").map((m) => m.trim()).filter(Boolean);
    const r = await ask({ action: "room:create", type: "group", name: [s.user, ...members].join(", "), members }).catch((err) => ({ success: false, message: err.message }));
    if (!r.success) return SB.notice($("notice"), "bad", r.message);
    $("new-members").value = "";
    s.rooms.set(r.room.roomId, { ...r.room, unread: 0 });
    renderRooms();
    openRoom(r.room.roomId);
  });
  setInterval(renderMembers, 30_000);

  // Live on load: a name from the address (?user=), the last one used, the tab's token,
  // or in development mode a new demo identity (as the ticket page does).
  const given = new URLSearchParams(location.search).get("user") ||
    localStorage.getItem(NAME_KEY) || sessionStorage.getItem(TOKEN_KEY);
  setStatus("offline", "Not connected");
  (async () => {
    let name = given;
    if (!name) {
      const info = await SB.fetchJson("/api/session-info").catch(() => null);
      if (info?.devMode) name = `guest-${Math.floor(1000 + Math.random() * 9000)}`;
    }
    if (name) {
      $("name").value = name;
      connect();
    }
  })();
})();
