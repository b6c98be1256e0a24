// Helpers shared by the ticket page and the dashboard. No dependencies; one global, `SB`.
"use strict";

window.SB = (() => {
  /** The element with this id (the pages' ids are fixed, so a miss is a bug). */
  const $ = (id) => {
    const node = document.getElementById(id);
    if (!node) throw new Error(`#${id} is missing`);
    return node;
  };

  /** Creates an element: `el("td", {className: "num"}, "12")`. Text only, never HTML. */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("aria-") || k === "role") node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  /** GET a JSON document from this server; throws with the status on failure. */
  async function fetchJson(path, timeoutMs = 10_000) {
    const res = await fetch(path, {
      headers: { accept: "application/json" },
      cache: "no-store",
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  }

  /**
   * Reconnect delay for the n-th consecutive attempt (0-based): 0.5 s doubling to 10 s,
   * with ±20 % jitter so that many pages do not come back in the same instant.
   */
  function backoffDelay(attempt) {
    const base = Math.min(10_000, 500 * 2 ** Math.min(attempt, 10));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  const numberFormat = new Intl.NumberFormat();
  const fmt = (n) => (Number.isFinite(n) ? numberFormat.format(n) : "—");

  /** "4:05" for 245 s; "0:00" at or below zero. */
  function clock(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  /** Shows `text` in a notice element with a tone: "ok", "warn", "bad" or "" (plain). */
  function notice(node, tone, text, action) {
    node.className = `notice ${tone}`.trim();
    node.replaceChildren(text);
    if (action) node.append(" ", action);
  }

  return { $, el, fetchJson, backoffDelay, fmt, clock, notice };
})();
