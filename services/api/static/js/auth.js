// Sign-in to the API: OpenID Connect authorization code + PKCE (S256) against the provider named by /ui/config.json,
// the access token kept in sessionStorage (this tab only) and sent as a bearer token.

const TOKEN = "releasegate.token";
const PENDING = "releasegate.login";
const FRESH_MS = 15000; // a token this young refused by the API: a configuration problem, not an expired sign-in

let configured = null;

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

export function config() {
  configured ??= fetch("/ui/config.json", { cache: "no-store" }).then((r) => {
    if (!r.ok) throw new ApiError(r.status, `the dashboard's configuration is unavailable (HTTP ${r.status})`);
    return r.json();
  });
  return configured;
}

export async function discovery() {
  const { issuer } = await config();
  const r = await fetch(`${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`);
  if (!r.ok) throw new ApiError(r.status, `the sign-in provider is unavailable (HTTP ${r.status})`);
  return r.json();
}

function base64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const randomString = (n = 32) => base64url(crypto.getRandomValues(new Uint8Array(n)));

async function s256(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

// Only a path of this dashboard is a place to come back to after signing in (never another origin).
export function safeReturn(path) {
  return typeof path === "string" && path.startsWith("/") && !path.startsWith("//") && !path.startsWith("/\\")
    ? path
    : "/";
}

export async function login(returnTo = location.pathname + location.search) {
  const [cfg, provider] = await Promise.all([config(), discovery()]);
  const state = randomString();
  const verifier = randomString(48);
  sessionStorage.setItem(PENDING, JSON.stringify({ state, verifier, returnTo: safeReturn(returnTo) }));
  const url = new URL(provider.authorization_endpoint);
  const params = {
    response_type: "code",
    client_id: cfg.client_id,
    redirect_uri: cfg.redirect_uri,
    scope: cfg.scope || "openid profile groups api",
    state,
    code_challenge: await s256(verifier),
    code_challenge_method: "S256",
  };
  if (cfg.resource) params.resource = cfg.resource;
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  location.assign(url.toString());
}

// The provider sent the browser back to the callback page: check the state, redeem the code with the verifier.
export async function completeLogin(query) {
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  if (query.get("error")) {
    throw new ApiError(400, `sign-in refused: ${query.get("error")} ${query.get("error_description") || ""}`.trim());
  }
  if (!pending || !query.get("state") || query.get("state") !== pending.state) {
    throw new ApiError(400, "this sign-in was not started here (state mismatch); sign in again");
  }
  const [cfg, provider] = await Promise.all([config(), discovery()]);
  const r = await fetch(provider.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: query.get("code") || "",
      redirect_uri: cfg.redirect_uri,
      client_id: cfg.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok || !body.access_token) {
    throw new ApiError(r.status, `the provider did not issue a token: ${body.error_description || body.error || r.status}`);
  }
  const expiresIn = Number(body.expires_in) || 300;
  sessionStorage.setItem(
    TOKEN,
    JSON.stringify({ access: body.access_token, idToken: body.id_token || null, at: Date.now(), expires: Date.now() + expiresIn * 1000 }),
  );
  return pending.returnTo;
}

function token() {
  const t = JSON.parse(sessionStorage.getItem(TOKEN) || "null");
  return t && t.expires > Date.now() + 5000 ? t : null;
}

export async function signOut() {
  const t = JSON.parse(sessionStorage.getItem(TOKEN) || "null");
  sessionStorage.removeItem(TOKEN);
  const [cfg, provider] = await Promise.all([config(), discovery().catch(() => ({}))]);
  if (!provider.end_session_endpoint) {
    location.assign("/");
    return;
  }
  // end the provider's session too, or the next sign-in would not ask for a password
  const url = new URL(provider.end_session_endpoint);
  url.searchParams.set("client_id", cfg.client_id);
  if (t?.idToken) url.searchParams.set("id_token_hint", t.idToken);
  if (cfg.post_logout_redirect_uri) url.searchParams.set("post_logout_redirect_uri", cfg.post_logout_redirect_uri);
  location.assign(url.toString());
}

// fetch() of the API with the bearer token; no token or a 401 starts a sign-in (the page navigates away).
export async function apiFetch(path, init = {}) {
  const t = token();
  if (!t) {
    await login();
    return new Promise(() => {});
  }
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${t.access}`);
  const r = await fetch(path, { ...init, headers });
  if (r.status === 401) {
    sessionStorage.removeItem(TOKEN);
    if (Date.now() - t.at < FRESH_MS) throw new ApiError(401, "the API refused a token the provider has just issued");
    await login();
    return new Promise(() => {});
  }
  return r;
}

export async function detail(r) {
  const body = await r.json().catch(() => null);
  const d = body && body.detail;
  if (typeof d === "string") return d;
  return d ? JSON.stringify(d) : `HTTP ${r.status}`;
}

export async function apiJson(path) {
  const r = await apiFetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new ApiError(r.status, await detail(r));
  return r.json();
}
