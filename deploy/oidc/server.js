// The local stack's OpenID Connect provider (npm `oidc-provider`): the people of directory.json sign in with a
// password, the dashboard and the CLI get JWT access tokens for the API (aud `releasegate`) by authorization code +
// PKCE, and the CI clients mint GitHub-Actions- and GitLab-shaped tokens by client_credentials. Every secret is a
// per-machine file written by `python -m releasegate_runtime.secrets` (.run/secrets/oidc/). Logs: JSON lines on
// stdout.
//
//   RG_OIDC_ISSUER   issuer URL (default http://127.0.0.1:19400); the port is its port unless RG_OIDC_PORT says
//   RG_OIDC_HOST     address to listen on (default 127.0.0.1)
//   RG_SECRETS_DIR   the secrets directory (default <repo>/.run/secrets)
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import Provider, { errors } from 'oidc-provider';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ISSUER = (process.env.RG_OIDC_ISSUER || 'http://127.0.0.1:19400').replace(/\/+$/, '');
const PORT = Number(process.env.RG_OIDC_PORT || new URL(ISSUER).port || 80);
const HOST = process.env.RG_OIDC_HOST || '127.0.0.1';
const SECRETS = path.resolve(process.env.RG_SECRETS_DIR || path.join(HERE, '..', '..', '.run', 'secrets'), 'oidc');

// The API as a resource server (RFC 8707): every access token is a JWT for it.
const RESOURCE = 'urn:releasegate:api';
const AUDIENCE = 'releasegate';
const API_SCOPE = 'api';
const PERSON_TOKEN_TTL = 600;
const CI_TOKEN_TTL = 300;
const MAX_FORM_BYTES = 4096;

const log = (event, fields = {}) => {
  process.stdout.write(`${JSON.stringify({ at: new Date().toISOString(), event, ...fields })}\n`);
};

const readSecret = (name) => {
  const file = path.join(SECRETS, name);
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new Error(`cannot read ${file} (${err.code}): run \`python -m releasegate_runtime.secrets\` first`);
  }
};

const directory = JSON.parse(fs.readFileSync(path.join(HERE, 'directory.json'), 'utf8'));

// Passwords are kept only as scrypt hashes; a login compares hashes in constant time, and an unknown user costs the
// same as a known one.
const hashPassword = (password, salt) => crypto.scryptSync(password, salt, 32);
const people = new Map(Object.entries(directory.people).map(([username, person]) => {
  const salt = crypto.randomBytes(16);
  return [username, { ...person, salt, hash: hashPassword(readSecret(`${username}.password`), salt) }];
}));
const decoy = { salt: crypto.randomBytes(16), hash: crypto.randomBytes(32) };

function checkPassword(username, password) {
  const person = people.get(username);
  const { salt, hash } = person || decoy;
  const candidate = hashPassword(String(password), salt);
  return crypto.timingSafeEqual(candidate, hash) && person !== undefined;
}

const ciClients = new Map(Object.entries(directory.ci));

const signingJwk = () => {
  const jwk = crypto.createPrivateKey(readSecret('signing-key.pem')).export({ format: 'jwk' });
  // RFC 7638 thumbprint as the key id: a new key gets a new kid, which the API's key cache looks up
  const thumbprint = crypto.createHash('sha256')
    .update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n }))
    .digest('base64url');
  return { ...jwk, kid: thumbprint, alg: 'RS256', use: 'sig' };
};

const firstParty = [
  {
    client_id: 'releasegate-dashboard',
    client_name: 'releasegate dashboard',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:18800/ui/callback', 'http://127.0.0.1:18800/ui/callback.html'],
    scope: 'openid profile groups',
  },
  {
    client_id: 'releasegate-cli',
    client_name: 'releasegate CLI',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:18899/callback'],
    scope: 'openid profile groups',
  },
];
const clients = [
  ...firstParty,
  ...[...ciClients.keys()].map((clientId) => ({
    client_id: clientId,
    client_secret: readSecret(`${clientId}.secret`),
    client_name: `CI ${clientId}`,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  })),
];
const firstPartyIds = new Set(firstParty.map((c) => c.client_id));

const escapeHtml = (value) => String(value).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
})[c]);

const cookieKey = readSecret('cookie.key');

const configuration = {
  clients,
  jwks: { keys: [signingJwk()] },
  cookies: { keys: [cookieKey] },
  findAccount: async (_ctx, sub) => {
    const person = people.get(sub);
    if (!person) return undefined;
    return {
      accountId: sub,
      claims: async () => ({ sub, name: person.name, preferred_username: sub, groups: [...person.groups] }),
    };
  },
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], groups: ['groups'] },
  scopes: ['openid', 'profile', 'groups'],
  responseTypes: ['code'],
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator, client) => {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: API_SCOPE,
          audience: AUDIENCE,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ciClients.has(client.clientId) ? CI_TOKEN_TTL : PERSON_TOKEN_TTL,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  pkce: { required: () => true },
  clientBasedCORS: (_ctx, origin, client) => origin !== 'null'
    && client.redirectUris.some((uri) => URL.parse(uri)?.origin === origin),
  // First-party clients: consent is granted on the person's behalf (there is nobody to ask for it but the person
  // who just signed in to releasegate's own dashboard or CLI).
  loadExistingGrant: async (ctx) => {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (!firstPartyIds.has(client.clientId) || !session.accountId) return undefined;
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope('openid profile groups');
    grant.addResourceScope(RESOURCE, API_SCOPE);
    await grant.save();
    return grant;
  },
  extraTokenClaims: async (_ctx, token) => {
    if (token.accountId) {
      const person = people.get(token.accountId);
      return person ? { preferred_username: token.accountId, groups: [...person.groups] } : undefined;
    }
    const ci = ciClients.get(token.clientId);
    return ci ? { ...ci.claims } : undefined;
  },
  formats: {
    customizers: {
      // a CI token's subject is its pipeline's (repo:OWNER/REPO:ref:REF, project_path:...), not the client id
      jwt: async (_ctx, token, jwt) => {
        const ci = !token.accountId && ciClients.get(token.clientId);
        if (ci) jwt.payload.sub = ci.sub;
      },
    },
  },
  ttl: {
    AccessToken: PERSON_TOKEN_TTL,
    ClientCredentials: CI_TOKEN_TTL,
    AuthorizationCode: 60,
    IdToken: PERSON_TOKEN_TTL,
    Interaction: 600,
    Session: 8 * 3600,
    Grant: 8 * 3600,
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<p>${escapeHtml(out.error)}: ${escapeHtml(out.error_description || '')}</p>`);
  },
};

function page(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`;
}

// The login form carries a token bound to its interaction; the POST must also carry the interaction's own cookie
// (SameSite=Lax, so never sent by another site's form) and, when the browser says where it comes from, our origin.
const csrfToken = (uid) => crypto.createHmac('sha256', cookieKey).update(`login:${uid}`).digest('base64url');

function loginPage(uid, client, { username = '', error = '' } = {}) {
  return page(`Sign in to ${client?.clientName || 'releasegate'}`, `
${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <input type="hidden" name="csrf" value="${escapeHtml(csrfToken(uid))}">
  <p><label>User <input name="username" value="${escapeHtml(username)}" required autofocus></label></p>
  <p><label>Password <input type="password" name="password" required></label></p>
  <p><button type="submit">Sign in</button></p>
</form>
<p><a href="/interaction/${escapeHtml(uid)}/abort">Cancel</a></p>`);
}

function confirmPage(uid, client, accountId) {
  return page(`Continue to ${client.clientName || client.clientId}`, `
<p>Signed in as ${escapeHtml(accountId)}.</p>
<form method="post" action="/interaction/${escapeHtml(uid)}/confirm">
  <input type="hidden" name="csrf" value="${escapeHtml(csrfToken(uid))}">
  <p><button type="submit">Continue</button></p>
</form>
<p><a href="/interaction/${escapeHtml(uid)}/abort">Cancel</a></p>`);
}

const SECURITY_HEADERS = {
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the login form's POST and
  // sameOrigin() refuses every real sign-in; the interaction URL still never leaves this origin
  'referrer-policy': 'same-origin',
};

function send(res, status, html) {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'text/html; charset=utf-8' });
  res.end(html);
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    if (!String(req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded')) {
      reject(Object.assign(new Error('expected a form'), { status: 415, expose: true }));
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_FORM_BYTES) {
        reject(Object.assign(new Error('form too large'), { status: 413, expose: true }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

const sameOrigin = (req) => {
  const { origin } = req.headers;
  return origin === undefined || origin === new URL(ISSUER).origin;
};

const timingSafeStringEqual = (a, b) => {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && crypto.timingSafeEqual(x, y);
};

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, page('Sign-in error', '<p>This sign-in page belongs to another sign-in. Start again.</p>'));
    return;
  }
  const client = await provider.Client.find(details.params.client_id);
  if (req.method === 'GET' && action === undefined) {
    if (details.prompt.name === 'login') {
      send(res, 200, loginPage(uid, client));
    } else if (details.prompt.name === 'consent' && firstPartyIds.has(client?.clientId) && details.session) {
      // a native client (the CLI) is never sent back silently: the person confirms, once per sign-in
      send(res, 200, confirmPage(uid, client, details.session.accountId));
    } else {
      send(res, 400, page('Sign-in error', `<p>Unexpected prompt ${escapeHtml(details.prompt.name)}.</p>`));
    }
    return;
  }
  if (req.method === 'GET' && action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'the person cancelled the sign-in',
    }, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'POST' && (action === 'login' || action === 'confirm')) {
    const form = await readForm(req);
    if (!sameOrigin(req) || !timingSafeStringEqual(form.get('csrf') || '', csrfToken(uid))) {
      log('login.refused', { uid, reason: 'cross-site request' });
      send(res, 403, page('Sign-in error', '<p>The sign-in form was not sent from this page.</p>'));
      return;
    }
    if (action === 'confirm') {
      if (details.prompt.name !== 'consent' || !firstPartyIds.has(client?.clientId) || !details.session) {
        send(res, 400, page('Sign-in error', '<p>Nothing to confirm.</p>'));
        return;
      }
      log('login.confirmed', { uid, username: details.session.accountId, client_id: client.clientId });
      await provider.interactionFinished(req, res, { consent: {} }, { mergeWithLastSubmission: true });
      return;
    }
    const username = (form.get('username') || '').trim();
    if (!checkPassword(username, form.get('password') || '')) {
      log('login.failed', { uid, username: username.slice(0, 64), client_id: details.params.client_id });
      send(res, 401, loginPage(uid, client, { username, error: 'Wrong user or password.' }));
      return;
    }
    log('login.succeeded', { uid, username, client_id: details.params.client_id });
    // typing the password on a page that names the client is the person's consent for a first-party client
    const consent = firstPartyIds.has(client?.clientId) ? { consent: {} } : {};
    await provider.interactionFinished(req, res, { login: { accountId: username }, ...consent }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  send(res, 405, page('Sign-in error', '<p>Method not allowed.</p>'));
}

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]{1,64})(?:\/(login|confirm|abort))?$/;

function main() {
  const provider = new Provider(ISSUER, configuration);
  for (const event of ['grant.success', 'grant.error', 'authorization.error', 'server_error',
    'introspection.error', 'revocation.error', 'userinfo.error']) {
    provider.on(event, (ctx, err) => {
      const failure = err || (ctx instanceof Error ? ctx : undefined);
      log(event, {
        client_id: ctx?.oidc?.client?.clientId,
        grant_type: ctx?.oidc?.params?.grant_type,
        account: ctx?.oidc?.session?.accountId ?? ctx?.oidc?.entities?.Account?.accountId,
        error: failure ? `${failure.name}: ${failure.error_description || failure.message}` : undefined,
      });
    });
  }
  const callback = provider.callback();
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, ISSUER);
    const match = INTERACTION.exec(pathname);
    if (!match) {
      callback(req, res);
      return;
    }
    interaction(provider, req, res, match[1], match[2]).catch((err) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const status = err instanceof errors.SessionNotFound ? 400 : (err.status || 500);
      if (status >= 500) log('interaction.error', { error: String(err.stack || err) });
      const reason = err instanceof errors.SessionNotFound
        ? 'This sign-in has expired or was started in another browser. Start again.'
        : (err.expose ? err.message : 'The sign-in failed.');
      send(res, status, page('Sign-in error', `<p>${escapeHtml(reason)}</p>`));
    });
  });
  server.listen(PORT, HOST, () => log('listening', { issuer: ISSUER, host: HOST, port: PORT }));
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
