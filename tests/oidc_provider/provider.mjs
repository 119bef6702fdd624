// The identity provider of Gantry's SSO tests: node-oidc-provider, an OpenID
// Certified implementation, configured the way a company IdP is (groups in a
// claim, refresh tokens with rotation, PKCE required) and started by
// tests/oidc.py on 127.0.0.1:$PORT.
//
// What a real IdP has and this file adds: a sign-in page (a user name, no
// password: the tests are about the relying party) and a small admin API the
// tests use to change a user's groups or disable the user while they are
// signed in to Gantry:
//
//   PUT    /test-admin/accounts/<id>   {"claims": {...}, "disabled": false, "mfa": false}
//   DELETE /test-admin/accounts/<id>   the account is gone (refresh and userinfo refused)
//
// Clients register themselves (OpenID Connect Dynamic Client Registration),
// so each test names its own redirect URIs.
import http from 'node:http';

import { Provider, errors } from 'oidc-provider';

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('Set PORT to the port to listen on.');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// id -> {claims, disabled}; the id is the `sub` and what the sign-in page asks for.
const accounts = new Map();

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

const provider = new Provider(issuer, {
  clients: [],
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
  },
  // `groups` is released with `openid`, as most company IdPs do once configured.
  claims: {
    sid: null,
    iss: null,
    // With `openid`, how and when the user authenticated: in every ID token, as
    // IdPs configured for step-up send them (Gantry's step-up reads them).
    openid: ['sub', 'groups', 'acr', 'amr', 'auth_time'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  pkce: { required: () => true },
  // Like Keycloak or Okta: every code exchange of a client allowed the grant
  // gets a refresh token, rotated at each use.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  cookies: { keys: ['gantry-test-provider-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const account = accounts.get(id);
    if (!account || account.disabled) {
      return undefined; // refresh grants and userinfo are refused from now on
    }
    return {
      accountId: id,
      async claims() {
        return { ...account.claims, sub: id };
      },
    };
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', Object.entries(out)
      .map(([key, value]) => `<p><b>${escapeHtml(key)}</b>: ${escapeHtml(value)}</p>`).join(''));
  },
});

// The provider's own failures go to the log (tests/oidc.py keeps it in test-results/).
provider.on('server_error', (ctx, error) => console.error('server_error', error));

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type });
  res.end(body);
}

function loginForm(uid, error = '') {
  return page('Test IdP: sign in', `${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
  <label>User name <input name="login" autofocus autocomplete="username"></label>
  <button type="submit">Sign in at the test IdP</button>
</form>`);
}

// The sign-in and consent steps. Consent is granted at once (a first-party
// client), with exactly the scopes and claims the client asked for.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    return send(res, 400, 'text/plain', 'interaction mismatch');
  }
  const { prompt, params } = details;
  if (prompt.name === 'login' && action === 'login' && req.method === 'POST') {
    const login = new URLSearchParams(await readBody(req)).get('login') || '';
    const account = accounts.get(login);
    if (!account || account.disabled) {
      return send(res, 200, 'text/html', loginForm(uid, `No active account named “${login}”.`));
    }
    // An account set up with {"mfa": true} signs in with a password and a
    // one-time code, and says so in the ID token (amr, acr), as an IdP does.
    const login_result = account.mfa
      ? { accountId: login, amr: ['pwd', 'otp'], acr: 'urn:gantry:test:mfa' }
      : { accountId: login, amr: ['pwd'], acr: 'urn:gantry:test:pwd' };
    return provider.interactionFinished(req, res, {
      login: { ...login_result, ts: Math.floor(Date.now() / 1000) },
    }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'login') {
    return send(res, 200, 'text/html', loginForm(uid));
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 400, 'text/plain', `unexpected prompt ${prompt.name}`);
}

async function admin(req, res, id) {
  if (req.method === 'PUT') {
    const body = JSON.parse((await readBody(req)) || '{}');
    accounts.set(id, {
      claims: body.claims || {}, disabled: Boolean(body.disabled), mfa: Boolean(body.mfa),
    });
    return send(res, 204, 'text/plain', '');
  }
  if (req.method === 'DELETE') {
    accounts.delete(id);
    return send(res, 204, 'text/plain', '');
  }
  if (req.method === 'GET' && accounts.has(id)) {
    return send(res, 200, 'application/json', JSON.stringify(accounts.get(id)));
  }
  return send(res, 404, 'text/plain', 'no such account');
}

const handleOidc = provider.callback();

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    let match = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login))?$/);
    if (match) {
      return await interaction(req, res, match[1], match[2]);
    }
    match = url.pathname.match(/^\/test-admin\/accounts\/([^/]+)$/);
    if (match) {
      return await admin(req, res, decodeURIComponent(match[1]));
    }
    return handleOidc(req, res);
  } catch (error) {
    const status = error instanceof errors.SessionNotFound ? 400 : 500;
    console.error(error);
    return send(res, status, 'text/plain', String(error.message || error));
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`test OpenID provider listening on ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
