import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Response } from 'supertest';
import { firstRunSetupLink } from '../../src/flows/admin-setup.ts';
import { createSession } from '../../src/flows/sessions.ts';
import { createUser } from '../../src/flows/users.ts';
import { LANG_COOKIE } from '../../src/http/pages-router.ts';
import { sessionCookieName } from '../../src/http/session.ts';
import { createApp } from '../../src/app.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * Security headers and cookie attributes on every page, found by walking the express router
 * (so a page added later is covered without touching this file), in development and
 * production mode, signed out and signed in:
 *
 * - CSP: scripts from 'self' only (no 'unsafe-inline' / 'unsafe-eval' / wildcards),
 *   frame-ancestors 'none', object-src 'none', base-uri, form-action; the HTML itself holds
 *   nothing that policy would have to allow (no inline script, event-handler attribute,
 *   style attribute or block, javascript: URL, foreign script or form target);
 * - nosniff, Referrer-Policy, X-Frame-Options, Cross-Origin-Opener-Policy, no X-Powered-By;
 * - HSTS (≥ 1 year, includeSubDomains) in production mode only;
 * - pages and every JSON answer that can carry a secret or a session's data: no-store;
 * - every cookie: HttpOnly, SameSite, no Domain; in production Secure and a __Host- prefix
 *   (or __Secure- for a cookie scoped to a path, which __Host- forbids).
 */

type Layer = { route?: { path: string; methods: Record<string, boolean> }; handle: { stack?: Layer[] } };

/** Every GET route the app serves, from the router itself. */
function getRoutes(tg: TestGateway): string[] {
  const out: string[] = [];
  const walk = (stack: Layer[]) => {
    for (const l of stack) {
      if (l.route !== undefined) {
        if (l.route.methods.get === true) out.push(l.route.path);
      } else if (l.handle.stack !== undefined) walk(l.handle.stack);
    }
  };
  walk((tg.app as unknown as { router: { stack: Layer[] } }).router.stack);
  return out;
}

const OPERATIONS = new Set(['/healthz', '/readyz', '/metrics', '/openapi.json']);

function htmlRoutes(tg: TestGateway): string[] {
  const api = new Set(createApp(tg.gw).api.routes.filter((r) => r.method === 'get').map((r) => r.path));
  return getRoutes(tg).filter((p) => !api.has(p) && !OPERATIONS.has(p) && !p.startsWith('/.well-known/'));
}

function directives(csp: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const part of csp.split(';')) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name !== undefined && name !== '') out.set(name.toLowerCase(), values);
  }
  return out;
}

/** Headers every response carries, whatever it is. */
function assertBaseHeaders(res: Response, label: string, production: boolean): void {
  const csp = res.headers['content-security-policy'];
  assert.equal(typeof csp, 'string', `${label}: CSP header`);
  const d = directives(csp as string);
  const scripts = d.get('script-src') ?? d.get('default-src');
  assert.ok(scripts !== undefined, `${label}: script-src or default-src`);
  for (const bad of ["'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", '*', 'data:', 'http:', 'https:']) {
    assert.ok(!scripts.includes(bad), `${label}: script-src without ${bad} (${csp as string})`);
  }
  for (const v of [...(d.get('style-src') ?? []), ...(d.get('default-src') ?? [])]) assert.notEqual(v, "'unsafe-inline'", `${label}: no inline styles allowed`);
  assert.deepEqual(d.get('frame-ancestors'), ["'none'"], `${label}: frame-ancestors 'none'`);
  assert.deepEqual(d.get('object-src'), ["'none'"], `${label}: object-src 'none'`);
  assert.ok(d.has('base-uri'), `${label}: base-uri`);
  assert.deepEqual(d.get('form-action'), ["'self'"], `${label}: form-action 'self'`);
  assert.equal(d.has('upgrade-insecure-requests'), production, `${label}: upgrade-insecure-requests in production only`);
  assert.equal(res.headers['x-content-type-options'], 'nosniff', `${label}: nosniff`);
  assert.equal(res.headers['referrer-policy'], 'no-referrer', `${label}: Referrer-Policy`);
  assert.equal(res.headers['x-frame-options'], 'SAMEORIGIN', `${label}: X-Frame-Options for old browsers`);
  assert.equal(res.headers['cross-origin-opener-policy'], 'same-origin', `${label}: COOP`);
  assert.equal(res.headers['x-powered-by'], undefined, `${label}: no X-Powered-By`);
  const hsts = res.headers['strict-transport-security'] as string | undefined;
  if (production) {
    assert.ok(hsts !== undefined, `${label}: HSTS in production`);
    const maxAge = Number(/max-age=(\d+)/.exec(hsts)?.[1]);
    assert.ok(maxAge >= 31_536_000, `${label}: HSTS max-age ≥ 1 year (${hsts})`);
    assert.match(hsts, /includeSubDomains/i, `${label}: HSTS includeSubDomains`);
  } else {
    assert.equal(hsts, undefined, `${label}: no HSTS over development http`);
  }
}

/** What the page's HTML may contain under that CSP: nothing inline, nothing foreign. */
function assertHtmlNeedsNoInline(html: string, label: string): void {
  for (const m of html.matchAll(/<script\b([^>]*)>/gi)) {
    const attrs = m[1] ?? '';
    const src = /\ssrc="([^"]*)"/i.exec(attrs)?.[1];
    assert.ok(src !== undefined, `${label}: inline <script> (${m[0]})`);
    assert.match(src, /^\/[^/\\]/, `${label}: script from our own origin (${src})`);
  }
  assert.doesNotMatch(html, /<[a-z][^>]*\son[a-z]+\s*=/i, `${label}: event-handler attribute`);
  assert.doesNotMatch(html, /<[a-z][^>]*\sstyle\s*=/i, `${label}: style attribute`);
  assert.doesNotMatch(html, /<style\b/i, `${label}: <style> block`);
  assert.doesNotMatch(html, /javascript:/i, `${label}: javascript: URL`);
  assert.doesNotMatch(html, /<(iframe|object|embed|frame)\b/i, `${label}: embedded frame or plugin`);
  for (const m of html.matchAll(/<form\b[^>]*\saction="([^"]*)"/gi)) {
    assert.match(m[1] ?? '', /^\/[^/\\]/, `${label}: form posts to our own origin (${m[1]})`);
  }
  for (const m of html.matchAll(/<link\b[^>]*\shref="([^"]*)"/gi)) {
    assert.match(m[1] ?? '', /^\/[^/\\]/, `${label}: stylesheet from our own origin (${m[1]})`);
  }
}

interface CookieSeen {
  label: string;
  raw: string;
}

function setCookies(res: Response): string[] {
  const raw = res.headers['set-cookie'] as unknown;
  return Array.isArray(raw) ? (raw as string[]) : [];
}

function assertCookie(c: CookieSeen, production: boolean): void {
  const [pair = '', ...attrs] = c.raw.split(';').map((s) => s.trim());
  const name = pair.slice(0, pair.indexOf('='));
  const has = (a: string) => attrs.some((x) => x.toLowerCase() === a.toLowerCase() || x.toLowerCase().startsWith(`${a.toLowerCase()}=`));
  const value = (a: string) => attrs.find((x) => x.toLowerCase().startsWith(`${a.toLowerCase()}=`))?.slice(a.length + 1);
  const label = `${c.label}: cookie ${name}`;
  assert.ok(has('HttpOnly'), `${label}: HttpOnly (${c.raw})`);
  assert.match(value('SameSite') ?? '', /^(Lax|Strict)$/i, `${label}: SameSite Lax or Strict (${c.raw})`);
  assert.ok(!has('Domain'), `${label}: no Domain (host-only) (${c.raw})`);
  const path = value('Path') ?? '';
  assert.ok(path.startsWith('/'), `${label}: explicit Path (${c.raw})`);
  if (production) {
    assert.ok(has('Secure'), `${label}: Secure in production (${c.raw})`);
    // The language preference is the one exemption: not a secret, and a planted value can
    // only pick another of the supported languages.
    if (path === '/') assert.ok(name === LANG_COOKIE || name.startsWith('__Host-'), `${label}: __Host- prefix for a whole-site cookie (${c.raw})`);
    else assert.ok(name.startsWith('__Secure-'), `${label}: __Secure- prefix for a path-scoped cookie (${c.raw})`);
  } else {
    assert.ok(!has('Secure'), `${label}: not Secure over development http (the browser would drop it)`);
    assert.ok(!name.startsWith('__Host-') && !name.startsWith('__Secure-'), `${label}: no secure prefix over development http`);
  }
}

for (const dialect of testDialects()) {
  for (const production of [false, true]) {
    const mode = production ? 'production' : 'development';
    describe(`security headers and cookies on every page (${mode}, ${dialect})`, () => {
      let tg: TestGateway;
      let sessionCookie: string;
      let staffCookie: string;
      let csrf: string;
      let setupLink: string;
      let stepUp: { id: string; ticket: string; userUrl: string };
      let basic: string;
      const cookiesSeen: CookieSeen[] = [];

      /** A request, with every cookie it sets recorded for the cookie checks. */
      async function record(label: string, res: Response): Promise<Response> {
        for (const raw of setCookies(res)) cookiesSeen.push({ label, raw });
        return res;
      }

      before(async () => {
        tg = await createTestGateway({
          dialect,
          config: production ? { mode: 'production', http: { publicUrl: 'https://mfa.example.com' }, webauthn: { rpId: 'mfa.example.com', origins: ['https://mfa.example.com'] } } : {},
        });
        const link = await firstRunSetupLink(tg.gw);
        assert.ok(link !== undefined);
        setupLink = new URL(link).pathname + new URL(link).search;
        const user = await makeUser(tg.gw, 'hdr-user');
        const s = await createSession(tg.gw, user.id, ['pwd']);
        sessionCookie = `${sessionCookieName(tg.config)}=${s.sessionId}`;
        // Staff with a second factor in the session: the console pages render for real.
        const staff = await createUser(tg.gw, { username: 'hdr-staff', password: PASSWORD, roles: ['admin', 'helpdesk', 'auditor'] }, { actor: 'test' });
        staffCookie = `${sessionCookieName(tg.config)}=${(await createSession(tg.gw, staff.id, ['pwd', 'otp', 'mfa'])).sessionId}`;
        csrf = s.csrfToken;
        await setPolicies(tg.gw, [{ id: 'hdr', action: 'payment.code', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', tokenTtlSeconds: 120 }]);
        const client = await makeClient(tg.gw, 'hdr client', ['payment.code']);
        basic = client.basic;
        const created = await tg.http().post('/v1/stepup').set('Authorization', basic).send({ subject: 'hdr-user', action: 'payment.code', context: { amount: '1.00', currency: 'CNY' } });
        assert.equal(created.status, 201, created.text);
        const userUrl = new URL(created.body.user_url as string);
        stepUp = { id: created.body.stepup_id as string, ticket: created.body.ticket as string, userUrl: userUrl.pathname + userUrl.search };
      });
      after(async () => {
        await tg.close();
      });

      it('the router walk finds the pages (so the sweep below proves something)', () => {
        const pages = htmlRoutes(tg);
        for (const p of ['/login', '/security', '/stepup/:id', '/setup', '/reset-password']) assert.ok(pages.includes(p), `${p} found among ${pages.join(' ')}`);
        assert.equal(pages.includes('/dev/outbox'), !production, 'the dev outbox exists in development only');
      });

      it('every page, signed out, signed in and as staff: CSP, headers, no-store, and HTML that needs nothing inline', async () => {
        const checked: string[] = [];
        for (const route of htmlRoutes(tg)) {
          const path = route === '/stepup/:id' ? `/stepup/${stepUp.id}` : route.replace(/:([A-Za-z0-9_]+)/g, 'sec_probe0000000000');
          for (const who of ['signed out', 'signed in', 'staff'] as const) {
            const label = `GET ${path} (${who}, ${mode})`;
            const req = tg.http().get(path).set('Accept-Language', 'en');
            const cookie = who === 'signed in' ? sessionCookie : who === 'staff' ? staffCookie : undefined;
            const res = await record(label, await (cookie === undefined ? req : req.set('Cookie', cookie)));
            assert.ok(res.status < 500, `${label}: ${res.status}`);
            assertBaseHeaders(res, label, production);
            if (/^text\/html/.test(String(res.headers['content-type']))) {
              assert.match(String(res.headers['cache-control']), /no-store/, `${label}: pages are not stored by caches`);
              assertHtmlNeedsNoInline(res.text, label);
              checked.push(`${path}=${res.status}`);
            }
          }
        }
        // The pages a person actually sees, rendered for real (not only their error pages).
        const real: [string, string, string?][] = [
          ['login form', '/login'],
          ['security page', '/security', sessionCookie],
          ['set-up page', setupLink],
          ['password reset (bad link)', '/reset-password?token=nope'],
        ];
        for (const [label, path, cookie] of real) {
          const req = tg.http().get(path).set('Accept-Language', 'zh-CN');
          const res = await record(label, await (cookie === undefined ? req : req.set('Cookie', cookie)));
          assert.ok(res.status < 500 && /^text\/html/.test(String(res.headers['content-type'])), `${label}: ${res.status}`);
          assertBaseHeaders(res, label, production);
          assertHtmlNeedsNoInline(res.text, label);
          assert.match(String(res.headers['cache-control']), /no-store/, `${label}: no-store`);
        }
        // The step-up page: the ticket link sets the (path-scoped) ticket cookie, then the page renders.
        const landing = await record('step-up link', await tg.http().get(stepUp.userUrl));
        assert.equal(landing.status, 303);
        assertBaseHeaders(landing, 'step-up link', production);
        assert.match(String(landing.headers['cache-control']), /no-store/, 'the ticket-bearing redirect is not stored');
        const ticketCookie = setCookies(landing)[0]?.split(';')[0];
        assert.ok(ticketCookie !== undefined, 'ticket cookie set');
        const page = await tg.http().get(`/stepup/${stepUp.id}`).set('Cookie', ticketCookie);
        assert.equal(page.status, 200, page.text);
        assertBaseHeaders(page, 'step-up page', production);
        assertHtmlNeedsNoInline(page.text, 'step-up page');
        assert.ok(checked.length >= 5, `pages checked: ${checked.join(' ')}`);
        // The console pages were rendered for staff (200), not only refused.
        const consolePages = checked.filter((c) => c.startsWith('/console') && c.endsWith('=200'));
        assert.ok(consolePages.length >= 3, `console pages rendered: ${checked.filter((c) => c.startsWith('/console')).join(' ')}`);
      });

      it('static assets and a sample of JSON answers carry the same headers; answers with secrets or session data are no-store', async () => {
        const js = await tg.http().get('/static/js/webauthn-login.js');
        assert.equal(js.status, 200);
        assertBaseHeaders(js, 'static script', production);
        assert.match(String(js.headers['content-type']), /javascript/);
        const login = await record('POST /v1/login', await tg.http().post('/v1/login').send({ username: 'hdr-user', password: PASSWORD }));
        assert.equal(login.status, 200, login.text);
        const samples: [string, Response, boolean][] = [
          ['POST /v1/login', login, true],
          ['GET /v1/me', await tg.http().get('/v1/me').set('Cookie', sessionCookie), true],
          ['GET /v1/me/factors', await tg.http().get('/v1/me/factors').set('Cookie', sessionCookie), true],
          ['GET /v1/stepup/:id', await tg.http().get(`/v1/stepup/${stepUp.id}`).set('Authorization', `Ticket ${stepUp.ticket}`), true],
          ['POST /v1/stepup/:id/token (pending)', await tg.http().post(`/v1/stepup/${stepUp.id}/token`).set('Authorization', basic), true],
          ['GET /v1/clients/me', await tg.http().get('/v1/clients/me').set('Authorization', basic), true],
          ['GET /healthz', await tg.http().get('/healthz'), true],
          ['404', await tg.http().get('/no/such/thing'), true],
          ['401 problem', await tg.http().get('/v1/me'), true],
          ['400 problem', await tg.http().post('/v1/login').type('json').send('{'), true],
          // Public documents: caches may keep them (relying services fetch the JWKS often).
          ['GET /.well-known/jwks.json', await tg.http().get('/.well-known/jwks.json'), false],
          ['GET /.well-known/stepgate-configuration', await tg.http().get('/.well-known/stepgate-configuration'), false],
          ['GET /openapi.json', await tg.http().get('/openapi.json'), false],
        ];
        for (const [label, res, sensitive] of samples) {
          assert.ok(res.status < 500, `${label}: ${res.status} ${res.text}`);
          assertBaseHeaders(res, label, production);
          const cacheControl = String(res.headers['cache-control']);
          if (sensitive) assert.match(cacheControl, /no-store/, `${label}: no-store (${cacheControl})`);
          else assert.doesNotMatch(cacheControl, /no-store/, `${label}: a public document may be cached (${cacheControl})`);
        }
        assert.doesNotMatch(String(js.headers['cache-control']), /no-store/, 'static assets may be cached');
      });

      it('every cookie set on the way (login form, sign-in by form and JSON, language switch, step-up ticket, sign-out) has the right attributes', async () => {
        const form = await record('GET /login', await tg.http().get('/login'));
        const formCookie = setCookies(form).map((c) => c.split(';')[0]).join('; ');
        const field = /name="_login_csrf" value="([^"]*)"/.exec(form.text)?.[1];
        assert.ok(field !== undefined && formCookie !== '', 'login form CSRF cookie and field');
        const signedIn = await record('POST /login', await tg.http().post('/login').set('Cookie', formCookie).type('form').send({ username: 'hdr-user', password: PASSWORD, _login_csrf: field }));
        assert.equal(signedIn.status, 303, signedIn.text);
        const session = setCookies(signedIn).find((c) => c.startsWith(`${sessionCookieName(tg.config)}=`));
        assert.ok(session !== undefined, 'the form sign-in sets the session cookie');
        const lang = await record('POST /lang', await tg.http().post('/lang').set('Cookie', session.split(';')[0] ?? '').type('form').send({ lang: 'zh-CN', next: '/security', _csrf: await csrfOf(session) }));
        assert.equal(lang.status, 303, lang.text);
        const out = await record('POST /logout', await tg.http().post('/logout').set('Cookie', session.split(';')[0] ?? '').type('form').send({ _csrf: await csrfOf(session) }));
        assert.ok(out.status < 400, out.text);
        await record('dead session', await tg.http().get('/security').set('Cookie', `${sessionCookieName(tg.config)}=forged`));
        const names = new Set(cookiesSeen.map((c) => c.raw.slice(0, c.raw.indexOf('='))));
        for (const expected of [LANG_COOKIE, sessionCookieName(tg.config), production ? '__Host-stepgate_login_csrf' : 'stepgate_login_csrf', production ? '__Secure-stepgate_ticket' : 'stepgate_ticket']) {
          assert.ok(names.has(expected), `saw cookie ${expected} (saw ${[...names].join(' ')})`);
        }
        for (const c of cookiesSeen) assertCookie(c, production);
      });

      /** The CSRF token of a session cookie, read the way the page gets it. */
      async function csrfOf(setCookie: string): Promise<string> {
        const me = await tg.http().get('/v1/me').set('Cookie', setCookie.split(';')[0] ?? '');
        assert.equal(me.status, 200, me.text);
        return me.body.csrf_token as string;
      }

      it('/openapi.json names the session cookie this mode sets', async () => {
        const doc = (await tg.http().get('/openapi.json')).body as { components: { securitySchemes: { session: { in: string; name: string } } } };
        assert.deepEqual(doc.components.securitySchemes.session.in, 'cookie');
        assert.equal(doc.components.securitySchemes.session.name, sessionCookieName(tg.config));
        assert.equal(doc.components.securitySchemes.session.name, production ? '__Host-stepgate_session' : 'stepgate_session');
      });

      it('state-changing pages answer with the same headers (a refused CSRF post, a sign-in failure)', async () => {
        const refused = await tg.http().post('/logout').set('Cookie', sessionCookie).type('form').send({ _csrf: 'wrong' });
        assert.ok(refused.status >= 400 && refused.status < 500, refused.text);
        assertBaseHeaders(refused, 'refused CSRF post', production);
        const bad = await tg.http().post('/login').type('form').send({ username: 'x', password: 'y' });
        assert.ok(bad.status >= 400 && bad.status < 500);
        assertBaseHeaders(bad, 'login without CSRF', production);
        assert.ok(csrf.length > 0);
      });
    });
  }
}
