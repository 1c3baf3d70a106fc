import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createUser } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { cookieFrom, hiddenField, signIn } from '../helpers/session.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * The shared layout: one header with navigation (console link for staff only), the language
 * switch (a cookie set by POST /lang, CSRF-checked with or without a session) and pages
 * rendered in the chosen language.
 */

const PASSWORD = 'layout passphrase 4821';

for (const dialect of testDialects()) {
  describe(`page layout and language switch (${dialect})`, () => {
    let t: TestGateway;

    before(async () => {
      t = await createTestGateway({ dialect });
      await createUser(t.gw, { username: 'lena', password: PASSWORD }, { actor: null });
      await createUser(t.gw, { username: 'root', password: PASSWORD, roles: ['admin'] }, { actor: null });
    });
    after(async () => t.close());

    it('negotiates from Accept-Language and marks the page language', async () => {
      const zh = await t.http().get('/login').set('Accept-Language', 'zh-CN,zh;q=0.9');
      assert.match(zh.text, /<html lang="zh-CN">/);
      assert.match(zh.text, /登录/);
      const en = await t.http().get('/login').set('Accept-Language', 'en-GB');
      assert.match(en.text, /<html lang="en">/);
      // The switch offers the other language, named in that language.
      assert.match(en.text, /<button type="submit" name="lang" value="zh-CN" lang="zh-CN"[^>]*>中文<\/button>/);
    });

    it('switches language without a session using the login double-submit token, and the cookie wins over Accept-Language', async () => {
      const agent = t.agent();
      const page = await agent.get('/login?next=%2Fsecurity').set('Accept-Language', 'en');
      const token = hiddenField(page.text, '_login_csrf');
      // The header form and the login form share one token (one Set-Cookie per response).
      assert.equal([...page.text.matchAll(new RegExp(`value="${token}"`, 'g'))].length, 2);
      assert.equal(hiddenField(page.text, 'next'), '/login?next=%2Fsecurity');
      const res = await agent.post('/lang').type('form').send({ _login_csrf: token, lang: 'zh-CN', next: '/login?next=%2Fsecurity' });
      assert.equal(res.status, 303);
      assert.equal(res.headers.location, '/login?next=%2Fsecurity');
      assert.equal(cookieFrom(res, 'stepgate_lang'), 'zh-CN');
      const again = await agent.get('/login').set('Accept-Language', 'en');
      assert.match(again.text, /<html lang="zh-CN">/);
      // And the login form still works after the switch (its token was not replaced).
      const login = await agent.post('/login').type('form').send({ _login_csrf: hiddenField(again.text, '_login_csrf'), username: 'lena', password: PASSWORD });
      assert.equal(login.status, 303);
    });

    it('refuses a switch without a valid token, an unknown language and a foreign next', async () => {
      const forged = await t.http().post('/lang').type('form').send({ lang: 'zh-CN', next: '/' });
      assert.equal(forged.status, 403);
      assert.equal(forged.body.code, 'csrf_failed');
      assert.equal(cookieFrom(forged, 'stepgate_lang'), undefined);

      const agent = t.agent();
      const page = await agent.get('/login');
      const token = hiddenField(page.text, '_login_csrf');
      const bad = await agent.post('/lang').type('form').send({ _login_csrf: token, lang: 'fr', next: '/' });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.invalid_params[0].pointer, '/lang');
      assert.equal(cookieFrom(bad, 'stepgate_lang'), undefined);
      const evil = await agent.post('/lang').type('form').send({ _login_csrf: token, lang: 'en', next: '//evil.example/x' });
      assert.equal(evil.status, 303);
      assert.equal(evil.headers.location, '/');
      // An unsupported cookie value is ignored, not trusted.
      const ignored = await t.http().get('/login').set('Cookie', 'stepgate_lang=xx').set('Accept-Language', 'zh');
      assert.match(ignored.text, /<html lang="zh-CN">/);
    });

    it('with a session: the session CSRF token is required; navigation shows the console to staff only', async () => {
      const user = await signIn(t, 'lena', PASSWORD);
      const page = await t.http().get('/security').set('Cookie', user.cookie);
      assert.equal(page.status, 200);
      assert.match(page.text, /href="\/security" aria-current="page"/);
      assert.doesNotMatch(page.text, /href="\/console"/);
      assert.equal(hiddenField(page.text, '_csrf'), user.csrf);
      const noToken = await t.http().post('/lang').set('Cookie', user.cookie).type('form').send({ lang: 'zh-CN', next: '/security' });
      assert.equal(noToken.status, 403);
      const ok = await t.http().post('/lang').set('Cookie', user.cookie).type('form').send({ _csrf: user.csrf, lang: 'zh-CN', next: '/security' });
      assert.equal(ok.status, 303);
      assert.equal(cookieFrom(ok, 'stepgate_lang'), 'zh-CN');

      const admin = await signIn(t, 'root', PASSWORD);
      const adminPage = await t.http().get('/security').set('Cookie', admin.cookie);
      assert.match(adminPage.text, /href="\/console"/);
    });

    it('the front door sends each kind of visitor to their page', async () => {
      assert.equal((await t.http().get('/')).headers.location, '/login');
      const user = await signIn(t, 'lena', PASSWORD);
      assert.equal((await t.http().get('/').set('Cookie', user.cookie)).headers.location, '/security');
      const admin = await signIn(t, 'root', PASSWORD);
      assert.equal((await t.http().get('/').set('Cookie', admin.cookie)).headers.location, '/console');
    });

    it('serves the stylesheet from the project, and every page links only local resources', async () => {
      const css = await t.http().get('/static/style.css');
      assert.equal(css.status, 200);
      assert.match(css.headers['content-type'] as string, /text\/css/);
      const page = await t.http().get('/login');
      assert.doesNotMatch(page.text, /(src|href)="(https?:)?\/\//);
    });
  });
}
