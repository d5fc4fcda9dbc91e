// The Metallica console's only script: follow the log's stream and refresh what it changes.
// No framework, no inline script (the page's Content-Security-Policy forbids it); every value
// from the server goes into the page as text (textContent), or as HTML this origin rendered and
// escaped (the fragments).
"use strict";

(function () {
  const body = document.body;
  const prefix = "/console";
  const status = document.getElementById("live-status");

  function say(text) {
    if (status) status.textContent = text;
  }

  // Put a fragment in place of an element's children; the element that had the keyboard's
  // focus in there has it again in the new ones (found by its id), so a live refresh does not
  // throw a keyboard user back to the top of the page.
  function replace(target, html) {
    const active = document.activeElement;
    const focused = active && active.id && target.contains(active) ? active.id : null;
    target.innerHTML = html;
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus({ preventScroll: true });
    }
  }

  // "/" puts the keyboard in the page's search field, as on most consoles (not while typing).
  document.addEventListener("keydown", function (event) {
    const search = document.getElementById("q");
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
    if (event.key === "/" && search && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      search.focus();
    }
  });

  // Replace an element's children with a fragment the server renders, at most once per `gap`
  // milliseconds however many events ask for it.
  function refresher(url, target, gap) {
    let pending = false;
    let last = 0;
    async function run() {
      pending = false;
      last = Date.now();
      try {
        const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if (answer.status === 401) { window.location.assign(prefix + "/login"); return; }
        if (answer.ok) replace(target, await answer.text());
      } catch (error) {
        say("Could not refresh: " + error);
      }
    }
    return function () {
      if (pending) return;
      pending = true;
      setTimeout(run, Math.max(0, gap - (Date.now() - last)));
    };
  }

  // Follow the console's stream from the log's position the page was read at (data-after), so
  // that nothing committed while the page was on its way is missed; an EventSource reconnects
  // by itself, sending the last position it had (Last-Event-ID), which the server prefers.
  function follow(query, onEvent) {
    const from = body.dataset.after ? "after=" + encodeURIComponent(body.dataset.after) : "";
    const params = [query, from].filter(Boolean).join("&");
    const source = new EventSource(prefix + "/stream" + (params ? "?" + params : ""));
    source.onopen = function () { say("Live"); body.dataset.live = "connected"; };
    source.onerror = function () { say("Reconnecting to the live log..."); body.dataset.live = "reconnecting"; };
    source.onmessage = function (message) { onEvent(JSON.parse(message.data)); };
    source.addEventListener("end", function () { say("The stream ended; reconnecting."); });
    window.addEventListener("pagehide", function () { source.close(); });
    return source;
  }

  const page = body.dataset.page;
  if (page === "workflows" && body.dataset.live === "yes") {
    const rows = document.getElementById("workflow-rows");
    const refresh = refresher(body.dataset.rows, rows, 300);
    follow("type=WorkflowStarted&type=WorkflowCompleted&type=WorkflowFailed", refresh);
  } else if (page === "workflow") {
    const panel = document.getElementById("workflow-panel");
    const refresh = refresher(body.dataset.panel, panel, 200);
    follow("workflow_id=" + encodeURIComponent(body.dataset.workflow), refresh);
  } else if (page === "log") {
    const rows = document.getElementById("log-rows");
    const type = body.dataset.type;
    follow(type ? "type=" + encodeURIComponent(type) : "", function (event) {
      const row = document.createElement("tr");
      const link = document.createElement("a");
      link.href = prefix + "/workflows/" + encodeURIComponent(event.workflow_id);
      link.textContent = event.workflow_id;
      const cells = [String(event.position), event.time, event.type, link, JSON.stringify(event.data)];
      for (const value of cells) {
        const cell = document.createElement("td");
        if (typeof value === "string") cell.textContent = value; else cell.appendChild(value);
        row.appendChild(cell);
      }
      row.className = "type-" + event.type;
      rows.insertBefore(row, rows.firstChild);
      while (rows.children.length > 200) rows.removeChild(rows.lastChild);
    });
  } else if (page === "health") {
    const panel = document.getElementById("health-panel");
    const refresh = refresher(body.dataset.panel, panel, 0);
    setInterval(refresh, Number(body.dataset.every || 2000));
    say("Refreshed every " + (Number(body.dataset.every || 2000) / 1000) + " s");
  }
})();
