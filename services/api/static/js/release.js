// The release page (/releases/{id}): state, traffic split, KPI verdicts, timeline, gate explanations, DR evidence,
// pending approvals and the actions this person may take. Every status event of the release re-reads it.

import { ApiError, apiFetch, apiJson, detail } from "./auth.js";
import * as charts from "./charts.js";
import { age, badge, fmt, h, header, liveStatus, replace, showError, showNotice, table, when } from "./dom.js";
import { coalesce, follow } from "./sse.js";

const id = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop() || "");
const path = `/v1/releases/${encodeURIComponent(id)}`;
const $ = (name) => document.getElementById(name);

const ACTION_LABELS = {
  approve: "Approve",
  exception: "Grant freeze exception",
  go: "Go",
  "no-go": "No-go",
  abort: "Abort",
  pause: "Pause",
  resume: "Resume",
  promote: "Promote",
  "promote-full": "Promote in full",
};

function renderHeader(r) {
  document.title = `${r.service} ${r.version} — releasegate`;
  replace($("title"), `${r.service} ${r.version} `, badge(r.state));
  $("title").querySelector(".badge").id = "state";
  replace(
    $("facts"),
    ...[
      ["release", r.release_id],
      ["author", r.author],
      ["strategy", r.strategy],
      ["environment", r.environment],
      ["step", r.step],
      ["digest", r.digest],
      ["started", when(r.created_at)],
      ["age", age(r.age_seconds)],
    ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { fact: k } }, fmt(v))]),
  );
  const weights = Object.entries(r.weights || {});
  replace($("weights"), weights.length ? `now: ${weights.map(([v, w]) => `${v} ${w}%`).join(", ")}` : "");
}

function renderApprovals(pending) {
  replace(
    $("approvals"),
    table(
      [
        ["kind", (p) => p.kind],
        ["step", (p) => p.step],
        ["given", (p) => `${(p.given || []).length} of ${fmt(p.needed)}${(p.given || []).length ? ` (${p.given.join(", ")})` : ""}`],
        ["may be given by", (p) => (p.groups || []).join(", ")],
      ],
      pending,
      { empty: "No approval is pending.", id: "approvals-table" },
    ),
  );
}

function renderActions(actions) {
  const box = $("action-buttons");
  replace(
    box,
    actions.map((action) =>
      h("button", { type: "button", id: `action-${action}`, className: `action action-${action}`, dataset: { action } }, ACTION_LABELS[action] || action),
    ),
  );
  $("actions").hidden = actions.length === 0;
}

const actionError = (message) => showError(message, "action-error");

async function act(action) {
  actionError(null);
  showNotice(null);
  const reason = $("action-reason").value.trim();
  if (!reason) {
    actionError(`Give a reason for ${ACTION_LABELS[action] || action}.`);
    $("action-reason").focus();
    return;
  }
  const r = await apiFetch(`${path}/actions/${encodeURIComponent(action)}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ reason }),
  });
  if (r.status === 202) {
    const body = await r.json().catch(() => ({}));
    showNotice(`${ACTION_LABELS[action] || action}: accepted${body.command_id ? ` (command ${body.command_id})` : ""}.`);
    $("action-reason").value = "";
    refresh();
    return;
  }
  actionError(`${ACTION_LABELS[action] || action} refused: ${await detail(r)}`);
}

function renderTraffic(traffic, release) {
  replace(
    $("traffic-table"),
    table(
      [
        ["at", (t) => when(t.at)],
        ["step", (t) => t.step],
        ["weights", (t) => Object.entries(t.weights || {}).map(([v, w]) => `${v} ${w}%`).join(", ")],
      ],
      traffic,
      { empty: "No traffic change recorded yet." },
    ),
  );
  const until = release.terminal ? Date.parse(release.updated_at) || Date.now() : Date.now();
  // shown before drawing: a chart in a hidden box would measure itself as 0 × 0
  $("traffic-chart-box").hidden = !charts.available() || traffic.length === 0;
  if (charts.available() && traffic.length) charts.trafficChart($("traffic-chart"), traffic, until);
}

// Each KPI's looks in order: one per verification that reported it.
function kpiLooks(verdicts) {
  const byName = new Map();
  for (const v of verdicts) {
    for (const kpi of v.kpis || []) {
      const look = { label: `${v.step_id} (${v.verifier})`, verdict: v, kpi: { ...kpi, stable: kpi.stable ?? kpi.baseline } };
      if (!byName.has(kpi.name)) byName.set(kpi.name, []);
      byName.get(kpi.name).push(look);
    }
  }
  return byName;
}

function renderVerdicts(verdicts) {
  replace(
    $("verdicts-table"),
    table(
      [
        ["at", (v) => when(v.at)],
        ["step", (v) => v.step_id],
        ["environment", (v) => v.environment],
        ["verifier", (v) => v.verifier],
        ["verdict", (v) => h("span", { className: `verdict verdict-${String(v.verdict).replace(/[^a-z]/g, "")}` }, fmt(v.verdict))],
        ["reason", (v) => v.reason],
      ],
      verdicts,
      { empty: "No verification has reported yet." },
    ),
  );
  const looks = kpiLooks(verdicts);
  const rows = [...looks].flatMap(([name, list]) => list.map((l) => ({ name, ...l })));
  replace(
    $("kpis-table"),
    table(
      [
        ["KPI", (l) => l.name],
        ["step", (l) => l.label],
        ["candidate", (l) => l.kpi.candidate],
        ["stable", (l) => l.kpi.stable],
        ["n candidate", (l) => l.kpi.candidate_n],
        ["n stable", (l) => l.kpi.stable_n],
        ["statistic", (l) => l.kpi.statistic],
        ["boundary", (l) => l.kpi.boundary],
        ["passed", (l) => (l.kpi.passed === undefined ? l.kpi.verdict : l.kpi.passed)],
      ],
      rows,
      { empty: "No KPI measured yet.", id: "kpis" },
    ),
  );
  const box = $("kpi-charts");
  if (!charts.available()) {
    replace(box);
    return;
  }
  const wanted = [...looks.keys()].map((name) => `kpi-chart-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`);
  for (const el of [...box.children]) if (!wanted.includes(el.dataset.chart)) el.remove();
  [...looks].forEach(([name, list], i) => {
    let figure = box.querySelector(`[data-chart="${wanted[i]}"]`);
    if (!figure) {
      figure = h("figure", { className: "chart", dataset: { chart: wanted[i] } }, h("canvas", { id: wanted[i] }));
      box.append(figure);
    }
    charts.kpiChart(figure.querySelector("canvas"), name, list);
  });
}

function renderTimeline(timeline) {
  replace(
    $("timeline"),
    table(
      [
        ["at", (t) => when(t.at)],
        ["actor", (t) => t.actor],
        ["state", (t) => (t.state ? badge(t.state) : "—")],
        ["step", (t) => t.step],
        ["what happened", (t) => t.reason],
        [
          "evidence",
          (t) =>
            t.evidence && Object.keys(t.evidence).length
              ? h("details", {}, h("summary", {}, "evidence"), h("pre", {}, JSON.stringify(t.evidence, null, 2)))
              : "—",
        ],
      ],
      timeline,
      { empty: "Nothing happened yet.", id: "timeline-table" },
    ),
  );
}

function renderGates(gates, explain) {
  replace($("explain"), explain.length ? h("ul", { id: "explain-list" }, explain.map((s) => h("li", {}, s))) : h("p", { className: "empty" }, "No gate has decided yet."));
  replace(
    $("gates"),
    table(
      [
        ["step", (g) => g.step_id],
        ["environment", (g) => g.environment],
        ["decision", (g) => g.decision],
        ["policy", (g) => g.policy_version],
        ["decided", (g) => when(g.decided_at)],
        ["warnings", (g) => (g.warnings || []).join("; ")],
      ],
      gates,
      { empty: "" },
    ),
  );
}

// DR report rows have no fixed shape: one column per key any row has.
function renderDr(dr) {
  const keys = [...new Set(dr.flatMap((row) => Object.keys(row)))];
  replace($("dr"), table(keys.map((k) => [k, (row) => row[k]]), dr, { empty: "No DR evidence for this release." }));
}

// The change record, fetched with the token (a plain link would carry none) and handed to the browser as a file.
async function downloadRecord(kind) {
  const r = await apiFetch(`${path}/${kind === "html" ? "record.html" : "record"}`);
  if (!r.ok) throw new ApiError(r.status, await detail(r));
  const link = h("a", { href: URL.createObjectURL(await r.blob()), download: `change-record-${id}.${kind}` });
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

async function load() {
  try {
    const data = await apiJson(path);
    showError(null);
    const r = data.release;
    renderHeader(r);
    renderApprovals(data.pending_approvals || []);
    renderActions(data.actions || []);
    renderTimeline(data.timeline || []);
    renderGates(data.gates || [], data.explain || []);
    renderDr(data.dr || []);
    renderTraffic(data.traffic || [], r);
    renderVerdicts(data.verdicts || []);
    $("record").hidden = !r.terminal;
    $("charts-missing").hidden = charts.available();
  } catch (err) {
    showError(err instanceof ApiError ? `Could not read the release: ${err.detail}` : `Could not show the release: ${err}`);
    if (!(err instanceof ApiError)) console.error(err);
  }
}

const refresh = coalesce(load);

async function main() {
  $("action-buttons").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (button) act(button.dataset.action).catch((err) => actionError(`${button.dataset.action} failed: ${err}`));
  });
  $("record").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-record]");
    if (!button) return;
    $("record-error").hidden = true;
    downloadRecord(button.dataset.record).catch((err) => {
      replace($("record-error"), `No change record: ${err instanceof ApiError ? err.detail : err}`);
      $("record-error").hidden = false;
    });
  });
  try {
    await header();
  } catch (err) {
    showError(`Could not sign in: ${err.detail || err}`);
    return;
  }
  await refresh();
  follow(`${path}/events`, { onEvent: refresh, onOpen: refresh, onStatus: liveStatus });
}

main();
