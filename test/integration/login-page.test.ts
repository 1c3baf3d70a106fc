import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { Response } from 'supertest';
import { createUser, loginThrottleKey, normaliseUsername } from '../../src/flows/users.ts';
import { negotiateLocale, safeNext } from '../../src/http/pages-router.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

const PASSWORD = 'orchid-lantern-93';
const CONFIG = { login: { maxFailures: 3, lockSeconds: 120, delayBaseSeconds: 0 } };

function cookies(res: Response): string[] {
  const raw = res.headers['set-cookie'] as unknown;
  return Array.isArray(raw) ? (raw as string[]) : [];
}

function cookieValue(res: Response, name: string): string | undefined {
  return cookies(res)
    .find((c) => c.startsWith(`${name}=`))
    ?.split(';')[0]
    ?.slice(name.length + 1);
}

function hidden(html: string, name: string): string | undefined {
  return new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1];
}

describe('login page helpers', () => {
  it('redirects only to same-site relative paths', () => {
    const base = 'https://mfa.example.com';
    assert.equal(safeNext('/stepup/abc?x=1#f', base), '/stepup/abc?x=1#f');
    assert.equal(safeNext('/', base), '/');
    for (const bad of ['//evil.example', '/\\evil.example', 'https://evil.example/', 'evil.example', 'javascript:alert(1)', '/\tfoo', '/a\r\nSet-Cookie: x=1', '', 42, undefined, '/.//evil.example', '/x/..//evil.example/p', '/%2e//evil.example', '/./\\evil.example', '/%2E%2E//evil.example']) {
      assert.equal(safeNext(bad, base), undefined, String(bad));
    }
    // Percent-encoded line breaks stay encoded: harmless in a Location header.
    assert.equal(safeNext('/%0d%0aSet-Cookie:x', base), '/%0d%0aSet-Cookie:x');
  });

  it('negotiates zh-CN or en from Accept-Language', () => {
    assert.equal(negotiateLocale(undefined), 'en');
    assert.equal(negotiateLocale('zh-CN,zh;q=0.9,en;q=0.8'), 'zh-CN');
    assert.equal(negotiateLocale('zh-TW'), 'zh-CN');
    assert.equal(negotiateLocale('en-US,en;q=0.9,zh;q=0.8'), 'en');
    assert.equal(negotiateLocale('fr-FR, zh;q=0.5, en;q=0.4'), 'zh-CN');
    assert.equal(negotiateLocale('fr, de'), 'en');
    assert.equal(negotiateLocale('zh;q=0, en'), 'en');
  });

  it('has the same message keys in every catalogue', () => {
    const en = JSON.parse(readFileSync(new URL('../../views/i18n/en.json', import.meta.url), 'utf8')) as Record<string, string>;
    const zh = JSON.parse(readFileSync(new URL('../../views/i18n/zh-CN.json', import.meta.url), 'utf8')) as Record<string, string>;
    assert.deepEqual(Object.keys(zh).sort(), Object.keys(en).sort());
  });
});

for (const dialect of testDialects()) {
  describe(`login page (${dialect})`, () => {
    let tg: TestGateway;

    before(async () => {
      tg = await createTestGateway({ dialect, config: CONFIG });
      await createUser(tg.gw, { username: 'wendy', displayName: 'Wendy <Darling>', password: PASSWORD }, { actor: 'cli' });
    });
    after(async () => {
      await tg.close();
    });

    async function openForm(agent = tg.agent(), path = '/login') {
      const page = await agent.get(path);
      assert.equal(page.status, 200);
      const token = hidden(page.text, '_login_csrf');
      assert.ok(token !== undefined, 'the form carries the login CSRF token');
      return { agent, page, token };
    }
    const throttleRow = (username: string) =>
      tg.gw.store.db.selectFrom('login_throttle').selectAll().where('key', '=', loginThrottleKey(tg.gw, normaliseUsername(username))).executeTakeFirst();

    it('serves an escaped, CSP-friendly form in English by default', async () => {
      const { page } = await openForm();
      assert.match(String(page.headers['content-type']), /^text\/html/);
      assert.match(page.text, /<html lang="en">/);
      assert.match(page.text, /<form method="post" action="\/login">/);
      assert.match(page.text, /autocomplete="current-password"/);
      assert.match(page.text, /href="\/static\/style\.css"/);
      // Scripts only as files from /static (the passkey sign-in module), never inline.
      assert.doesNotMatch(page.text, /<script(?![^>]*\ssrc="\/static\/)|style=/, 'no inline script or style (CSP)');
      assert.doesNotMatch(page.text, /<script[^>]*>[^<]+<\/script>/, 'no inline script body');
      assert.equal(page.headers['cache-control'], 'no-store');
      const cookie = cookies(page).find((c) => c.startsWith('stepgate_login_csrf='));
      assert.ok(cookie !== undefined);
      assert.match(cookie, /HttpOnly/);
      const css = await tg.http().get('/static/style.css');
      assert.equal(css.status, 200);
      assert.match(String(css.headers['content-type']), /text\/css/);
    });

    it('speaks Chinese when the browser asks for it', async () => {
      const page = await tg.http().get('/login').set('Accept-Language', 'zh-CN,zh;q=0.9');
      assert.match(page.text, /<html lang="zh-CN">/);
      assert.match(page.text, /用户名/);
      assert.match(page.text, /密码/);
    });

    it('signs in through the form and redirects to a safe next', async () => {
      const { agent, token } = await openForm(tg.agent(), '/login?next=%2Fstepup%2Fabc%3Fx%3D1');
      const res = await agent.post('/login').type('form').send({ _login_csrf: token, username: 'wendy', password: PASSWORD, next: '/stepup/abc?x=1' });
      assert.equal(res.status, 303, res.text);
      assert.equal(res.headers.location, '/stepup/abc?x=1');
      assert.ok(cookieValue(res, 'stepgate_session') !== undefined);
      const me = await agent.get('/v1/me');
      assert.equal(me.status, 200);
      // Signed in, the page offers sign-out (with the session's CSRF token), escaped.
      const page = await agent.get('/login');
      assert.match(page.text, /Wendy &lt;Darling&gt;/);
      assert.equal(hidden(page.text, '_csrf'), me.body.csrf_token);
      const out = await agent.post('/logout').type('form').send({ _csrf: me.body.csrf_token });
      assert.equal(out.status, 303);
      assert.equal((await agent.get('/v1/me')).status, 401);
    });

    it('ignores an off-site next', async () => {
      for (const next of ['//evil.example/x', 'https://evil.example/', '/\\evil.example', '/.//evil.example/x', '/x/..//evil.example']) {
        const { agent, token } = await openForm();
        const res = await agent.post('/login').type('form').send({ _login_csrf: token, username: 'wendy', password: PASSWORD, next });
        assert.equal(res.status, 303);
        assert.equal(res.headers.location, '/login', next);
      }
    });

    it('refuses the form without a valid double-submit token, changing nothing', async () => {
      const before = await tg.gw.store.db.selectFrom('audit_log').select('seq').execute();
      // No cookie, no field.
      const none = await tg.http().post('/login').type('form').send({ username: 'wendy', password: PASSWORD });
      // A field copied from someone else's page, without the cookie.
      const { token } = await openForm();
      const noCookie = await tg.http().post('/login').type('form').send({ _login_csrf: token, username: 'wendy', password: PASSWORD });
      // The cookie without the field.
      const a = await openForm();
      const noField = await a.agent.post('/login').type('form').send({ username: 'wendy', password: PASSWORD });
      // Cookie and field agreeing, but not signed by us (a planted cookie).
      const forged = 'AAAAAAAAAAAAAAAAAAAAAA.1767225600000.bm90LWEtcmVhbC1zaWduYXR1cmUtYXQtYWxsLXJlYWxseQ';
      const planted = await tg.http().post('/login').set('Cookie', `stepgate_login_csrf=${forged}`).type('form').send({ _login_csrf: forged, username: 'wendy', password: PASSWORD });
      for (const res of [none, noCookie, noField, planted]) {
        assert.equal(res.status, 403);
        assert.equal(cookieValue(res, 'stepgate_session'), undefined, 'no session issued');
      }
      assert.equal(await throttleRow('wendy'), undefined, 'no attempt charged');
      const afterRows = await tg.gw.store.db.selectFrom('audit_log').select('seq').execute();
      assert.equal(afterRows.length, before.length, 'nothing audited: nothing happened');
    });

    it('a login form expires', async () => {
      const { agent, token } = await openForm();
      tg.clock.advance(3 * 60 * 60);
      const res = await agent.post('/login').type('form').send({ _login_csrf: token, username: 'wendy', password: PASSWORD });
      assert.equal(res.status, 403);
      // The answer is a fresh form that works.
      const fresh = hidden(res.text, '_login_csrf');
      assert.ok(fresh !== undefined && fresh !== token);
      const retry = await agent.post('/login').type('form').send({ _login_csrf: fresh, username: 'wendy', password: PASSWORD });
      assert.equal(retry.status, 303);
    });

    it('shows one message for a wrong password and an unknown user, never echoing the password', async () => {
      const a = await openForm();
      const wrong = await a.agent.post('/login').type('form').send({ _login_csrf: a.token, username: 'wendy', password: 'Guess-Number-1' });
      const b = await openForm();
      const unknown = await b.agent.post('/login').type('form').send({ _login_csrf: b.token, username: 'nobody-<b>', password: 'Guess-Number-1' });
      assert.equal(wrong.status, 401);
      assert.equal(unknown.status, 401);
      assert.match(wrong.text, /The username or password is incorrect\./);
      assert.match(unknown.text, /The username or password is incorrect\./);
      assert.doesNotMatch(wrong.text + unknown.text, /Guess-Number-1/);
      assert.match(unknown.text, /value="nobody-&lt;b&gt;"/, 'the username is kept, escaped');
      assert.doesNotMatch(tg.logs.text, /Guess-Number-1/);
    });

    it('shows the lock with Retry-After', async () => {
      await createUser(tg.gw, { username: 'xena', password: PASSWORD }, { actor: 'cli' });
      const { agent } = await openForm();
      let last: Response | undefined;
      for (let i = 0; i <= CONFIG.login.maxFailures; i += 1) {
        const page = await agent.get('/login');
        last = await agent.post('/login').type('form').send({ _login_csrf: hidden(page.text, '_login_csrf'), username: 'xena', password: 'wrong-password' });
      }
      assert.equal(last?.status, 429);
      assert.equal(last?.headers['retry-after'], '120');
      assert.match(last?.text ?? '', /Try again in 2 min/);
    });

    it('rejects missing fields with 400 and keeps the form usable', async () => {
      const { agent, token } = await openForm();
      const res = await agent.post('/login').type('form').send({ _login_csrf: token, username: 'wendy' });
      assert.equal(res.status, 400);
      assert.match(res.text, /Enter your username and password/);
      assert.ok(hidden(res.text, '_login_csrf') !== undefined);
    });
  });
}
