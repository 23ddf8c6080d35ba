// An OpenID Connect provider for the test suite: oidc-provider (OpenID Certified) over
// HTTPS on 127.0.0.1, with a plain login form for its users and a control endpoint
// through which a test makes the token endpoint misbehave as an attacker would.
//
// node provider.mjs CONFIG.json
//   CONFIG: {cert, key: PEM files; port (0: any); kid: the signing key's id;
//            clients: [{client_id, client_secret, redirect_uris}];
//            users: {NAME: {password, claims: {...}}}; id_token_ttl: seconds}
// Prints "listening PORT" once it serves.

import { readFileSync } from 'node:fs';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import { SignJWT, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK }
  from 'jose';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const server = https.createServer({
  cert: readFileSync(config.cert), key: readFileSync(config.key),
});
await new Promise((resolve) => server.listen(config.port || 0, '127.0.0.1', resolve));
const port = server.address().port;
const issuer = `https://127.0.0.1:${port}`;

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await exportJWK(privateKey)), kid: config.kid, alg: 'RS256', use: 'sig' };
const signingKey = await importJWK(signingJwk, 'RS256');

const provider = new Provider(issuer, {
  clients: config.clients.map((c) => ({
    grant_types: ['authorization_code'], response_types: ['code'], ...c,
  })),
  jwks: { keys: [signingJwk] },
  claims: {
    openid: ['sub'], email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'], groups: ['groups'], logins: ['logins'],
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'logins'],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { IdToken: config.id_token_ttl || 3600, AccessToken: 600, AuthorizationCode: 60 },
  cookies: { keys: [randomUUID()] },
  async findAccount(ctx, id) {
    const user = config.users[id];
    if (!user) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...user.claims }; } };
  },
  // First-party client: consent is implied, no consent page.
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const existing = session.grantIdFor(client.clientId);
    if (existing) return ctx.oidc.provider.Grant.find(existing);
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId,
      accountId: session.accountId });
    grant.addOIDCScope('openid email profile groups logins');
    await grant.save();
    session.grantIdFor(client.clientId, grant.jti);
    return grant;
  },
});

// What the token endpoint does to the ID token it hands out (set by POST /test/mode).
let mode = { mode: 'pass' };

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path !== '/token' || !ctx.body || typeof ctx.body.id_token !== 'string') return;
  ctx.body = { ...ctx.body, id_token: await rewrite(ctx.body.id_token) };
});

async function rewrite(token) {
  const [head, , signature] = token.split('.');
  const claims = decodeJwt(token);
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  switch (mode.mode) {
    case 'tamper': // change what it says, keep the provider's signature
      return `${head}.${b64({ ...claims, ...mode.claims })}.${signature}`;
    case 'resign': // a token the provider's own key signed, saying something else
      return new SignJWT({ ...claims, ...mode.claims })
        .setProtectedHeader({ ...decodeProtectedHeader(token), ...mode.header })
        .sign(signingKey);
    case 'alg_none':
      return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, ...mode.claims })}.`;
    default:
      return token;
  }
}

const callback = provider.callback();

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

function page(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><title>Test provider</title>${html}`);
}

async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    return page(res, 200, `<form method="post" action="/interaction/${uid}">
      <input name="login"><input name="password" type="password">
      <button>Sign in</button></form>`);
  }
  const form = await readForm(req);
  const user = config.users[form.login];
  if (!user || user.password !== form.password) {
    return page(res, 401, '<p>wrong user name or password</p>');
  }
  if (details.prompt.name !== 'login') return page(res, 400, '<p>unexpected prompt</p>');
  return provider.interactionFinished(req, res, { login: { accountId: form.login } },
    { mergeWithLastSubmission: false });
}

server.on('request', async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    const match = url.pathname.match(/^\/interaction\/([^/]+)$/);
    if (match) return await interaction(req, res, match[1]);
    if (url.pathname === '/test/mode' && req.method === 'POST') {
      let body = '';
      for await (const chunk of req) body += chunk;
      mode = JSON.parse(body);
      res.writeHead(204);
      return res.end();
    }
    return callback(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) page(res, 500, '<p>provider error</p>');
  }
});

console.log(`listening ${port}`);
