// The fleet page: one reading (status + overlaps, see agentfleet/dashboard.py) drawn as a table
// and an agents-by-agents matrix, redrawn on every reading the server sends on /events.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const query = "?token=" + encodeURIComponent(token);

function element(tag, attributes = {}, ...children) {
  const made = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  made.append(...children.filter((child) => child !== null && child !== undefined));
  return made;
}

function number(value) { return value === null || value === undefined ? "-" : String(value); }

function age(moment) {
  if (!moment) return "-";
  const seconds = Math.max(0, (Date.now() - Date.parse(moment)) / 1000);
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  if (seconds < 129600) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function health(agent) {
  if (!agent.reachable) return "unreachable";
  return agent.error ? "error" : "ok";
}

function drawStatus(statuses) {
  const rows = statuses.map((agent) => {
    const row = element("tr", {"data-agent": agent.name, class: health(agent) === "ok" ? "" : "down"},
      element("td", {}, agent.name), element("td", {}, agent.backend),
      element("td", {title: agent.error || ""}, health(agent)),
      element("td", {}, agent.branch || "-"), element("td", {}, element("code", {}, (agent.head || "-").slice(0, 10))),
      element("td", {}, agent.base || "-"));
    for (const value of [agent.ahead, agent.behind, agent.uncommitted])
      row.append(element("td", {class: "number"}, number(value)));
    row.append(element("td", {title: agent.last_commit || ""}, age(agent.last_commit)),
      element("td", {title: agent.last_git_activity || ""}, age(agent.last_git_activity)));
    return row;
  });
  document.querySelector("#status tbody").replaceChildren(...rows);
}

function pairCell(pair) {
  if (!pair) return element("span", {class: "cell apart"}, "");
  if (!pair.clean)
    return element("span", {class: "cell conflict", title: pair.conflicts.join("\n")}, pair.conflicts.join(", "));
  if (pair.shared.length)
    return element("span", {class: "cell shared", title: pair.shared.join("\n")}, pair.shared.join(", "));
  return element("span", {class: "cell apart"}, "");
}

function baseCell(agent) {
  if (!agent) return element("span", {class: "cell apart"}, "not read");
  if (agent.merges_into_base) return element("span", {class: "cell base"}, "base ✓");
  return element("span", {class: "cell base stale", title: agent.base_conflicts.join("\n")},
    "base ✗ " + agent.base_conflicts.join(", "));
}

function drawMatrix(names, overlaps) {
  const pairs = new Map();
  for (const pair of overlaps.pairs || []) {
    pairs.set(pair.agents.join("\u0000"), pair);
    pairs.set([...pair.agents].reverse().join("\u0000"), pair);
  }
  const agents = new Map((overlaps.agents || []).map((agent) => [agent.name, agent]));
  const head = element("tr", {}, element("th"), ...names.map((name) => element("th", {scope: "col"}, name)));
  const rows = names.map((one) => element("tr", {}, element("th", {scope: "row"}, one), ...names.map((other) =>
    element("td", {"data-pair": one + " " + other},
      one === other ? baseCell(agents.get(one)) : pairCell(pairs.get(one + "\u0000" + other))))));
  document.getElementById("matrix").replaceChildren(
    element("table", {}, element("thead", {}, head), element("tbody", {}, ...rows)));
  const lines = (overlaps.pairs || []).filter((pair) => !pair.clean).map((pair) =>
    element("li", {class: "conflict-line"}, pair.agents.join(" × ") + ": " + pair.conflicts.join(", ")));
  for (const agent of overlaps.agents || [])
    if (!agent.merges_into_base)
      lines.push(element("li", {class: "conflict-line"}, agent.name + " × base: " + agent.base_conflicts.join(", ")));
  for (const unread of overlaps.unread || [])
    lines.push(element("li", {}, unread.name + " left out: " + unread.error));
  document.getElementById("conflicts").replaceChildren(...lines);
}

function draw(reading) {
  const summary = document.getElementById("summary");
  document.getElementById("fleet").textContent = reading.fleet || "";
  if (reading.error) {
    summary.textContent = "could not read the fleet: " + reading.error;
    summary.className = "conflict";
    return;
  }
  const overlaps = reading.overlaps;
  const conflicts = (overlaps.pairs || []).filter((pair) => !pair.clean).length;
  summary.textContent = `${reading.status.length} agents, base ${overlaps.base || "?"}` +
    (overlaps.base_commit ? ` (${overlaps.base_commit.slice(0, 10)})` : "") + ", " +
    (overlaps.conflict ? `conflict predicted (${conflicts} between agents)` : "no conflict predicted") +
    `; read ${new Date(reading.taken).toLocaleTimeString()}`;
  summary.className = overlaps.conflict ? "conflict" : "clean";
  drawStatus(reading.status);
  drawMatrix(reading.status.map((agent) => agent.name), overlaps);
  document.body.dataset.taken = reading.taken;
}

const events = new EventSource("/events" + query);
events.onmessage = (event) => draw(JSON.parse(event.data));
