"""The operator's page itself: one HTML document, no external resource, made to be read from two metres.

Four counts a supervisor reads (to flash, flashing, passed, failed) across the top; one card per port,
its state in its colour (PASS green, FAIL red with the reason in large type, flashing blue with its
progress, retry amber); when nothing is flashing yet, the command that starts the station.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Flashing station</title>
<style>
  :root { font-size: 20px; --pass: #17702f; --fail: #b3261e; --flash: #1f5fbf; --retry: #9a5b00; --ink: #111827; }
  body { font-family: system-ui, sans-serif; margin: 0; padding: 1rem 1.5rem; background: #eef1f5; color: var(--ink);
         font-size: 1rem; }
  header { display: flex; align-items: baseline; gap: 1.5rem; margin-bottom: .8rem; }
  h1 { font-size: 1.7rem; margin: 0; }
  #stations { color: #374151; font-size: 1.2rem; }
  #counts { display: grid; grid-template-columns: repeat(4, 1fr); gap: .8rem; margin-bottom: .9rem; }
  .count { background: #fff; border-radius: .6rem; padding: .5rem 1rem; box-shadow: 0 1px 3px #0003;
           border-top: .5rem solid #6b7280; }
  .count .n { font-size: 3.4rem; font-weight: 800; line-height: 1.1; font-variant-numeric: tabular-nums; }
  .count .label { font-size: 1.1rem; font-weight: 700; text-transform: uppercase; letter-spacing: .05em; }
  #count-flashing { border-top-color: var(--flash); } #count-passed { border-top-color: var(--pass); }
  #count-failed { border-top-color: var(--fail); }
  #count-failed.some { background: var(--fail); color: #fff; }
  #summary { font-size: 1rem; color: #374151; margin-bottom: .6rem; }
  #next { font-size: 1.6rem; font-weight: 600; background: #fff; border-radius: .6rem; padding: 1.2rem 1.4rem;
          border-left: .6rem solid var(--flash); margin-bottom: 1rem; }
  #next:empty { display: none; }
  #next code { font-size: 1.35rem; background: #e5e7eb; padding: .1rem .4rem; border-radius: .3rem; }
  #error { color: var(--fail); font-size: 1.3rem; font-weight: 700; }
  #ports { display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr)); gap: .9rem; }
  .port { background: #fff; border-radius: .6rem; padding: .8rem 1.1rem; box-shadow: 0 1px 3px #0003;
          border-left: .7rem solid #9ca3af; }
  .port.passed { background: var(--pass); color: #fff; border-left-color: #0b3d19; }
  .port.failed { background: var(--fail); color: #fff; border-left-color: #5f130e; }
  .port.flashing { border-left-color: var(--flash); }
  .port.retry { border-left-color: var(--retry); background: #fff7e6; }
  .name { font-size: 1.5rem; font-weight: 800; word-break: break-all; }
  .station { font-size: 1rem; opacity: .85; }
  .board { margin: .3rem 0; font-family: ui-monospace, monospace; font-size: 1.2rem; }
  .phase { font-size: 1.2rem; font-weight: 600; }
  progress { width: 100%; height: 1.4rem; display: none; }
  .flashing progress { display: block; }
  .outcome { font-size: 2.6rem; font-weight: 900; letter-spacing: .04em; margin-top: .2rem; }
  .flashing .outcome { color: var(--flash); font-size: 1.6rem; }
  .retry .outcome { color: var(--retry); font-size: 1.8rem; }
  .reason { font-size: 1.05rem; margin: .2rem 0; word-break: break-word; }
  .failed .reason { font-size: 1.45rem; font-weight: 700; }
  button.retry { margin-top: .5rem; padding: .5rem 1.6rem; border: 3px solid #fff; border-radius: .4rem;
                 background: #fff; color: var(--fail); font-size: 1.4rem; font-weight: 800; cursor: pointer; }
</style>
</head>
<body>
<header><h1>Flashing station</h1><div id="stations"></div></header>
<div id="counts">
  <div class="count" id="count-to_flash"><div class="n">–</div><div class="label">to flash</div></div>
  <div class="count" id="count-flashing"><div class="n">–</div><div class="label">flashing</div></div>
  <div class="count" id="count-passed"><div class="n">–</div><div class="label">passed</div></div>
  <div class="count" id="count-failed"><div class="n">–</div><div class="label">failed</div></div>
</div>
<div id="summary">connecting…</div>
<div id="error"></div>
<div id="next"></div>
<div id="ports"></div>
<script>
const OUTCOMES = {passed: "PASS", failed: "FAIL", retry: "RETRY QUEUED", flashing: "flashing"};
function card(port) {
  const div = document.createElement("div");
  div.className = "port " + port.outcome;
  div.dataset.port = port.port;
  div.dataset.serial = port.serial || "";
  const add = (tag, cls, text) => { const e = document.createElement(tag); e.className = cls;
                                    e.textContent = text; div.appendChild(e); return e; };
  add("div", "name", port.port);
  add("div", "station", "station " + port.station_name);
  add("div", "board", (port.serial || "-") + "  " + (port.thing_name || ""));
  add("div", "phase", port.outcome === "flashing" ? port.phase : "");
  const bar = document.createElement("progress"); bar.max = 100; bar.value = port.progress; div.appendChild(bar);
  add("div", "outcome", OUTCOMES[port.outcome] || port.outcome);
  add("div", "reason", port.detail);
  if (port.outcome === "failed" && port.serial) {
    const button = add("button", "retry", "Retry");
    button.onclick = () => fetch("api/retry", {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify({serial: port.serial, port: port.port,
                                                                     station: port.station})})
      .then(r => r.ok ? refresh() : r.text().then(t => { document.getElementById("error").textContent = t; }));
  }
  return div;
}
function refresh() {
  return fetch("api/state").then(r => r.json()).then(state => {
    document.getElementById("error").textContent = "";
    for (const [name, value] of Object.entries(state.counts)) {
      const tile = document.getElementById("count-" + name);
      if (!tile) continue;
      tile.querySelector(".n").textContent = value;
      tile.classList.toggle("some", value > 0);
    }
    const preparing = state.counts.preparing ? ", " + state.counts.preparing + " still being prepared" : "";
    document.getElementById("summary").textContent = state.devices + " devices in this batch" + preparing;
    const next = document.getElementById("next");
    next.replaceChildren();
    if (state.next_step) {
      const [before, command, after] = state.next_step.split("`");
      next.append(before || "");
      if (command) { const c = document.createElement("code"); c.textContent = command; next.append(c); }
      next.append(after || "");
    }
    const stations = [...new Set(state.ports.map(p => p.station_name))];
    document.getElementById("stations").textContent = stations.length ? "stations: " + stations.join(", ") : "";
    document.getElementById("ports").replaceChildren(...state.ports.map(card));
  }).catch(e => { document.getElementById("error").textContent = "journal unreachable: " + e; });
}
refresh();
setInterval(refresh, 500);
</script>
</body>
</html>
"""
