
"use strict";
(() => {
  const REFRESH_MS = 1000;
  const EVENTS_EVERY_MS = 5000;
  const FETCH_TIMEOUT_MS = 5000;
  const SHOW_EVENTS = 50;
  const COLUMNS = ["Instance", "State", "PID", "Release", "Uptime", "Restarts", "Health",
    "RSS", "CPU"];

  const byId = (id) => document.getElementById(id);

  // The only way anything reaches the page: text nodes, never markup.
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function uptime(seconds) {
    if (typeof seconds !== "number") return "-";
    let s = Math.floor(seconds);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return d + "d" + two(h) + "h";
    if (h) return h + "h" + two(m) + "m";
    if (m) return m + "m" + two(s) + "s";
    return s + "s";
  }

  function rss(bytes) {
    if (typeof bytes !== "number") return "-";
    const mib = bytes / 1048576;
    return (mib >= 100 ? mib.toFixed(0) : mib.toFixed(1)) + "MiB";
  }

  function clock(date) {
    return date.toLocaleTimeString([], {hour12: false});
  }

  // A state name is app-independent vocabulary, but only known words become classes.
  const STATES = /*STATES*/;
  const stateClass = (state) => (STATES.includes(state) ? state : "");

  function health(inst) {
    if (inst.healthy === true) return ["healthy", "healthy"];
    if (inst.healthy === false) return ["unhealthy", "unhealthy"];
    if (inst.state === "RUNNING" && inst.ready === false) return ["not ready", "swapping"];
    return ["-", ""];
  }

  function cell(row, label, text, cls) {
    const td = el("td", cls, text);
    td.setAttribute("data-label", label);
    row.append(td);
    return td;
  }

  function appSection(name, app) {
    const section = el("section", "app");
    const head = el("div", "apphead");
    head.append(el("h2", null, name), el("span", stateClass(app.state), app.state));
    head.append(el("span", "dim", "release " + (app.release || "-")));
    if (app.should_run === false) head.append(el("span", "dim", "stopped on purpose"));
    section.append(head);
    if (app.deploy && typeof app.deploy === "object") {
      const parts = Object.entries(app.deploy).map(([k, v]) => k + "=" + v);
      section.append(el("p", "note swapping", "deploy in progress: " + parts.join(", ")));
    }
    const table = el("table");
    const hrow = el("tr");
    for (const title of COLUMNS) hrow.append(el("th", null, title));
    table.append(el("thead"));
    table.tHead.append(hrow);
    const body = el("tbody");
    for (const [iname, inst] of Object.entries(app.instances || {})) {
      const row = el("tr");
      row.setAttribute("data-instance", name + ":" + iname);
      cell(row, "Instance", iname, "mono");
      const state = inst.swapping ? inst.state + " (swapping)" : inst.state;
      cell(row, "State", state, stateClass(inst.state));
      cell(row, "PID", inst.pid ?? "-", "num");
      cell(row, "Release", inst.release || app.release || "-", "mono");
      cell(row, "Uptime", uptime(inst.uptime_s), "num");
      cell(row, "Restarts", inst.restarts ?? 0, "num");
      const [htext, hcls] = health(inst);
      cell(row, "Health", htext, hcls);
      cell(row, "RSS", rss(inst.rss_bytes), "num");
      const cpu = typeof inst.cpu_percent === "number" ? inst.cpu_percent.toFixed(1) + "%" : "-";
      cell(row, "CPU", cpu, "num");
      body.append(row);
      if (inst.last_error) {
        const erow = el("tr");
        const td = cell(erow, "Last error", iname + ": " + inst.last_error, "err");
        td.colSpan = COLUMNS.length;
        body.append(erow);
      }
    }
    table.append(body);
    section.append(table);
    return section;
  }

  // -- events: what the page sees change, and the daemon's /events when it has one --

  const seen = [];  // {time: Date, app, instance, kind, message}, oldest first
  const swapsSeen = new Map();  // app -> finished_at of the last swap already listed
  let previous = null;  // "app:instance" -> instance, from the last refresh
  let serverEvents = null;  // null: none (yet); else the daemon's list, newest first
  let eventsProbe = "unknown";  // "unknown" | "present" | "absent"
  let nextEventsAt = 0;

  function note(time, app, instance, kind, message) {
    seen.push({time, app, instance, kind, message});
    if (seen.length > 500) seen.splice(0, seen.length - 500);
  }

  function observe(status, now) {
    const current = new Map();
    for (const [aname, app] of Object.entries(status.apps || {})) {
      const swap = app.last_swap;
      if (swap && typeof swap.finished_at === "number"
          && swapsSeen.get(aname) !== swap.finished_at) {
        swapsSeen.set(aname, swap.finished_at);
        const took = typeof swap.duration_s === "number" ? swap.duration_s.toFixed(2) + "s" : "?";
        note(new Date(swap.finished_at * 1000), aname, swap.instance,
             swap.ok ? "swap" : "swap failed",
             "took " + took + (swap.reason ? ": " + swap.reason : ""));
      }
      for (const [iname, inst] of Object.entries(app.instances || {})) {
        current.set(aname + ":" + iname, inst);
        const old = previous && previous.get(aname + ":" + iname);
        if (!previous) {
          if (inst.last_error) note(now, aname, iname, "last error", inst.last_error);
          continue;
        }
        if (!old) { note(now, aname, iname, "added", inst.state); continue; }
        const pids = "pid " + (old.pid ?? "-") + " \u2192 " + (inst.pid ?? "-");
        if ((inst.restarts ?? 0) > (old.restarts ?? 0)) {
          note(now, aname, iname, "restart", "restarts " + inst.restarts + ", " + pids);
        } else if (inst.pid !== old.pid && inst.pid !== null && old.pid !== null) {
          note(now, aname, iname, "new process", pids);
        }
        if (inst.state !== old.state) {
          note(now, aname, iname, "state", old.state + " \u2192 " + inst.state);
        }
        if (inst.healthy !== old.healthy && inst.healthy !== null) {
          note(now, aname, iname, "health", inst.healthy ? "healthy" : "unhealthy");
        }
        if ((inst.release || null) !== (old.release || null)) {
          note(now, aname, iname, "release", (old.release || "-") + " \u2192 "
               + (inst.release || "-"));
        }
        if (inst.last_error && inst.last_error !== old.last_error) {
          note(now, aname, iname, "error", inst.last_error);
        }
      }
    }
    if (previous) {
      for (const key of previous.keys()) {
        if (!current.has(key)) {
          const [aname, iname] = key.split(":");
          note(now, aname, iname, "removed", "");
        }
      }
    }
    previous = current;
  }

  function eventTime(value) {
    if (typeof value === "number") return new Date(value * 1000);
    const date = new Date(String(value));
    return isNaN(date.getTime()) ? null : date;
  }

  function eventItem(ev) {
    const li = el("li");
    const when = ev.time instanceof Date ? ev.time : eventTime(ev.time);
    li.append(el("span", "when dim mono", when ? clock(when) : String(ev.time ?? "")));
    const who = ev.instance ? (ev.app ?? "") + ":" + ev.instance : (ev.app ?? "");
    if (who) li.append(el("span", "who mono", who));
    const kind = String(ev.kind ?? "");
    const bad = /fail|crash|error|unhealthy|fatal|backoff|rollback/i.test(kind);
    li.append(el("span", "kind" + (bad ? " failed" : ""), kind));
    li.append(el("span", null, ev.message ?? ""));
    return li;
  }

  function renderEvents() {
    const box = byId("events");
    const parts = [el("h2", null, "Recent events")];
    if (serverEvents) {
      parts.push(el("p", "note", "From the daemon, newest first:"));
      const list = el("ol");
      for (const ev of serverEvents.slice(0, SHOW_EVENTS)) list.append(eventItem(ev));
      parts.push(list);
    }
    parts.push(el("p", "note", "Seen by this page since " + clock(openedAt)
      + (seen.length ? ", newest first:" : ": nothing yet.")));
    const list = el("ol");
    list.id = "seen";
    for (const ev of seen.slice(-SHOW_EVENTS).reverse()) list.append(eventItem(ev));
    parts.push(list);
    box.replaceChildren(...parts);
  }

  async function getJSON(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const resp = await fetch(path, {cache: "no-store", signal: ctl.signal,
        headers: {"Accept": "application/json"}});
      return {status: resp.status, data: resp.ok ? await resp.json() : null};
    } finally {
      clearTimeout(timer);
    }
  }

  async function pollEvents() {
    if (eventsProbe === "absent" || Date.now() < nextEventsAt) return;
    nextEventsAt = Date.now() + EVENTS_EVERY_MS;
    try {
      const {status, data} = await getJSON("events");
      if (status === 404) { eventsProbe = "absent"; return; }
      if (data && Array.isArray(data.events)) {
        eventsProbe = "present";
        const list = data.events.filter((ev) => ev && typeof ev === "object");
        list.sort((a, b) => (eventTime(b.time) || 0) - (eventTime(a.time) || 0));
        serverEvents = list;
      }
    } catch (err) {
      // Optional source: a failure here never hides the status.
    }
  }

  // -- the header and the refresh loop -----------------------------------------------

  const openedAt = new Date();
  let lastOk = null;

  function renderHeader(status) {
    const sup = status.supervisor || {};
    byId("daemon").textContent = "version " + (sup.version ?? "?") + " \u00b7 pid "
      + (sup.pid ?? "?") + " \u00b7 up " + uptime(sup.uptime_s) + " \u00b7 " + (sup.state ?? "");
    let total = 0;
    let running = 0;
    const problems = [];
    for (const [aname, app] of Object.entries(status.apps || {})) {
      for (const [iname, inst] of Object.entries(app.instances || {})) {
        total += 1;
        if (inst.state === "RUNNING") running += 1;
        if (app.should_run === false || inst.state === "STOPPED") continue;
        if (inst.state !== "RUNNING" || inst.healthy === false) problems.push(aname + ":" + iname);
      }
    }
    const summary = byId("summary");
    summary.textContent = running + "/" + total + " instances running"
      + (problems.length ? ", needs attention: " + problems.join(", ") : ", all well");
    summary.className = problems.length ? "failed" : "RUNNING";
    document.title = (problems.length ? "\u2716 " : "\u2714 ") + "supervisord-lite";
  }

  function setConnection(ok, text) {
    const conn = byId("conn");
    conn.className = ok ? "ok" : "bad";
    conn.textContent = text;
    document.body.classList.toggle("stale", !ok);
  }

  async function refresh() {
    const now = new Date();
    try {
      const {status, data} = await getJSON("status");
      if (!data) throw new Error("HTTP " + status);
      observe(data, now);
      await pollEvents();
      renderHeader(data);
      const apps = Object.entries(data.apps || {}).sort(([a], [b]) => (a < b ? -1 : 1));
      const sections = apps.map(([name, app]) => appSection(name, app));
      if (!sections.length) sections.push(el("p", "dim", "no apps configured"));
      byId("apps").replaceChildren(...sections);
      renderEvents();
      lastOk = now;
      setConnection(true, "live \u00b7 updated " + clock(now));
    } catch (err) {
      const since = lastOk ? "; last update " + clock(lastOk) : "";
      setConnection(false, "cannot reach the daemon (" + (err && err.message) + ")" + since);
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  refresh();
})();
