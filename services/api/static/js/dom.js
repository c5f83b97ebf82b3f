// Building the DOM from data without ever parsing data as HTML: every string becomes a text node.

import { apiJson, signOut } from "./auth.js";

// h("td", {className: "n", dataset: {state}}, "text", child...) — props are DOM properties (dataset merged),
// never innerHTML; children are nodes or strings (as text).
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "innerHTML" || k === "outerHTML") throw new Error("h(): no HTML from data");
    else el[k] = v;
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function fmt(v) {
  if (v === undefined || v === null || v === "") return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function age(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function badge(state) {
  return h("span", { className: `badge state-${String(state).replace(/[^a-z_]/g, "")}`, dataset: { state } }, state);
}

// A table of `rows` with `columns` [[heading, row => value or Node], ...]; an empty list says so.
export function table(columns, rows, { empty = "none", id } = {}) {
  if (!rows || rows.length === 0) return h("p", { className: "empty", id }, empty);
  return h(
    "table",
    { id },
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", { scope: "col" }, heading)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          {},
          columns.map(([, cell]) => {
            const v = cell(row);
            return h("td", {}, v instanceof Node ? v : fmt(v));
          }),
        ),
      ),
    ),
  );
}

// An error box of the page (role=alert; `#error` for reading, `#action-error` for what an action answered, so that
// a re-render never wipes a refusal); null clears it.
export function showError(message, boxId = "error") {
  const box = document.getElementById(boxId);
  box.hidden = !message;
  replace(box, message || "");
}

export function showNotice(message) {
  const box = document.getElementById("notice");
  box.hidden = !message;
  replace(box, message || "");
}

// The page's top bar: who is signed in, the live-stream status, sign-out.
export async function header() {
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  const me = await apiJson("/v1/me");
  replace(document.getElementById("whoami"), `${me.name || me.subject} (${(me.roles || []).join(", ") || "no role"})`);
  return me;
}

export function liveStatus(status) {
  const el = document.getElementById("live");
  el.dataset.live = status;
  replace(el, status === "live" ? "live" : "reconnecting…");
}
