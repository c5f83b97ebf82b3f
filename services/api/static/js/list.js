// The list page (/): recent releases and the approvals pending over all of them, re-read on every status event.

import { ApiError, apiJson } from "./auth.js";
import { age, badge, h, header, liveStatus, replace, showError, table } from "./dom.js";
import { coalesce, follow } from "./sse.js";

const $ = (name) => document.getElementById(name);
let shown = { releases: [], fetchedAt: Date.now() };

const releaseLink = (r) => h("a", { href: `/releases/${encodeURIComponent(r.release_id)}`, className: "release-link" }, r.release_id);

function renderReleases() {
  const elapsed = (Date.now() - shown.fetchedAt) / 1000;
  const rows = table(
    [
      ["state", (r) => badge(r.state)],
      ["release", releaseLink],
      ["service", (r) => r.service],
      ["version", (r) => r.version],
      ["strategy", (r) => r.strategy],
      ["step", (r) => r.step],
      ["age", (r) => age(r.terminal ? r.age_seconds : r.age_seconds + elapsed)],
    ],
    shown.releases,
    { empty: "No release yet.", id: "releases-table" },
  );
  if (rows.tagName === "TABLE") {
    rows.querySelectorAll("tbody tr").forEach((tr, i) => {
      tr.dataset.release = shown.releases[i].release_id;
      tr.dataset.state = shown.releases[i].state;
    });
  }
  replace($("releases"), rows);
}

function renderApprovals(pending) {
  replace(
    $("approvals"),
    table(
      [
        ["release", (p) => (p.release_id ? releaseLink(p) : "—")],
        ["service", (p) => p.service],
        ["version", (p) => p.version],
        ["kind", (p) => p.kind],
        ["step", (p) => p.step],
        ["given", (p) => `${(p.given || []).length} of ${p.needed ?? "?"}`],
        ["may be given by", (p) => (p.groups || []).join(", ")],
      ],
      pending,
      { empty: "No approval is pending.", id: "approvals-table" },
    ),
  );
}

async function load() {
  try {
    const [releases, approvals] = await Promise.all([apiJson("/v1/releases?limit=50"), apiJson("/v1/approvals")]);
    shown = { releases, fetchedAt: Date.now() };
    showError(null);
    renderReleases();
    renderApprovals(approvals);
  } catch (err) {
    showError(err instanceof ApiError ? `Could not read the releases: ${err.detail}` : `Could not show the releases: ${err}`);
    if (!(err instanceof ApiError)) console.error(err);
  }
}

async function main() {
  try {
    await header();
  } catch (err) {
    showError(`Could not sign in: ${err.detail || err}`);
    return;
  }
  const refresh = coalesce(load);
  await refresh();
  follow("/v1/events", { onEvent: refresh, onOpen: refresh, onStatus: liveStatus });
  setInterval(renderReleases, 15000); // ages move on between events
}

main();
