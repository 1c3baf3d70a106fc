import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { confirmForTest, cookieFrom, hiddenField, type SignedIn, signIn } from '../helpers/session.ts';
import { makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { insertActiveTotp } from '../helpers/totp.ts';

/**
 * "My security" pages for the account itself (src/http/account-pages-router.ts): changing the
 * password with the current one, and the signed-in devices. The same rules as the JSON API
 * (POST /v1/me/password, /v1/me/sessions): the attempt counts towards the sign-in lockout
 * before the current password is compared, a second factor must be confirmed first, ending a
 * device needs a fresh sign-in, every form needs the session's CSRF token.
 */
for (const dialect of testDialects()) {
  describe(`account pages: password and signed-in devices (${dialect})`, () => {
    let tg: TestGateway;
    const NEW_PASSWORD = 'a much longer brand new passphrase 7';

    before(async () => {
      tg = await createTestGateway({ dialect });
    });
    after(async () => {
      await tg?.close();
    });

    const page = (s: SignedIn, path: string, lang = 'en') => tg.http().get(path).set('Cookie', s.cookie).set('Accept-Language', lang);
    const post = (s: SignedIn, path: string, form: Record<string, string>) => tg.http().post(path).set('Cookie', s.cookie).type('form').send(form);
    const alive = async (s: SignedIn) => (await tg.http().get('/v1/me').set('Cookie', s.cookie)).status === 200;
    /** Every failure charged to any sign-in name (the throttle key is derived from the name, not stored plainly). */
    async function throttleFailures(): Promise<number> {
      const rows = await tg.gw.store.db.selectFrom('login_throttle').select('failures').execute();
      return rows.reduce((sum, r) => sum + Number(r.failures), 0);
    }
    async function passwordHash(userId: string): Promise<string | null> {
      const row = await tg.gw.store.db.selectFrom('factors').select('secret_hash').where('user_id', '=', userId).where('type', '=', 'password').executeTakeFirstOrThrow();
      return row.secret_hash;
    }

    it('sends a visitor without a session to sign in, and links both pages from "my security"', async () => {
      for (const path of ['/security/password', '/security/sessions']) {
        const res = await tg.http().get(path);
        assert.equal(res.status, 303);
        assert.equal(res.headers.location, `/login?next=${encodeURIComponent(path)}`);
      }
      await makeUser(tg.gw, 'alma');
      const s = await signIn(tg, 'alma', PASSWORD);
      const security = await page(s, '/security');
      assert.match(security.text, /href="\/security\/password"/);
      assert.match(security.text, /href="\/security\/sessions"/);
    });

    it('changes the password: every other session ends, this browser gets a new one, the old password stops working', async () => {
      const u = await makeUser(tg.gw, 'bruno');
      const here = await signIn(tg, 'bruno', PASSWORD);
      const elsewhere = await signIn(tg, 'bruno', PASSWORD);
      const form = await page(here, '/security/password');
      assert.equal(form.status, 200);
      assert.match(form.text, /autocomplete="current-password"/);
      const res = await post(here, '/security/password', { _csrf: hiddenField(form.text, '_csrf'), current_password: PASSWORD, new_password: NEW_PASSWORD, new_password_confirm: NEW_PASSWORD });
      assert.equal(res.status, 303, res.text);
      assert.equal(res.headers.location, '/security?notice=passwordChanged');
      const sid = cookieFrom(res);
      assert.ok(sid !== undefined, 'a new session cookie');
      const renewed: SignedIn = { cookie: `stepgate_session=${sid}`, csrf: '', userId: u.id };
      assert.equal(await alive(here), false, 'the session the change was made in was replaced');
      assert.equal(await alive(elsewhere), false, 'every other session ended');
      assert.equal(await alive(renewed), true);
      const notice = await page(renewed, '/security?notice=passwordChanged', 'zh-CN');
      assert.match(notice.text, /密码已修改/);
      assert.equal((await tg.http().post('/v1/login').send({ username: 'bruno', password: PASSWORD })).status, 401);
      assert.equal((await tg.http().post('/v1/login').send({ username: 'bruno', password: NEW_PASSWORD })).status, 200);
      const audit = await tg.gw.store.db.selectFrom('audit_log').select('type').where('subject', '=', u.id).execute();
      assert.ok(audit.some((r) => r.type === 'user.password_changed'), JSON.stringify(audit));
    });

    it('refuses bad input without comparing, charging or changing anything, and says which field', async () => {
      const u = await makeUser(tg.gw, 'carla');
      const s = await signIn(tg, 'carla', PASSWORD);
      const csrf = hiddenField((await page(s, '/security/password')).text, '_csrf');
      const before = await passwordHash(u.id);
      const failuresBefore = await throttleFailures();
      const cases: [Record<string, string>, RegExp, string][] = [
        [{ current_password: PASSWORD, new_password: NEW_PASSWORD, new_password_confirm: `${NEW_PASSWORD}x` }, /The two new passwords differ/, 'new_password_confirm'],
        [{ current_password: PASSWORD, new_password: 'short', new_password_confirm: 'short' }, /at least 8 characters/, 'new_password'],
        [{ current_password: PASSWORD, new_password: 'password123', new_password_confirm: 'password123' }, /too common/, 'new_password'],
        [{ current_password: PASSWORD, new_password: 'carla', new_password_confirm: 'carla' }, /at least 8|username/, 'new_password'],
        [{ current_password: '', new_password: NEW_PASSWORD, new_password_confirm: NEW_PASSWORD }, /Enter your current password/, 'current_password'],
        [{ current_password: 'x'.repeat(2000), new_password: NEW_PASSWORD, new_password_confirm: NEW_PASSWORD }, /Enter your current password/, 'current_password'],
        [{ current_password: PASSWORD, new_password: 'y'.repeat(2000), new_password_confirm: 'y'.repeat(2000) }, /at most/, 'new_password'],
      ];
      for (const [fields, message, field] of cases) {
        const res = await post(s, '/security/password', { _csrf: csrf, ...fields });
        assert.equal(res.status, 400, `${JSON.stringify(fields).slice(0, 80)}: ${res.status}`);
        assert.match(res.text, message);
        assert.match(res.text, new RegExp(`id="${field}"[^>]*aria-invalid="true"`));
        assert.doesNotMatch(res.text, new RegExp(PASSWORD), 'no password is echoed back');
      }
      // A field sent twice (an array) is not a string: refused as missing.
      const doubled = await tg.http().post('/security/password').set('Cookie', s.cookie).type('form').send(`_csrf=${csrf}&current_password=a&current_password=b&new_password=${encodeURIComponent(NEW_PASSWORD)}&new_password_confirm=${encodeURIComponent(NEW_PASSWORD)}`);
      assert.equal(doubled.status, 400);
      assert.match((await page(s, '/security/password', 'zh-CN')).text, /修改密码/);
      const zh = await tg.http().post('/security/password').set('Cookie', s.cookie).set('Accept-Language', 'zh-CN').type('form').send({ _csrf: csrf, current_password: PASSWORD, new_password: 'short', new_password_confirm: 'short' });
      assert.match(zh.text, /新密码至少需要 8 个字符/);
      assert.equal(await passwordHash(u.id), before, 'nothing changed');
      assert.equal(await throttleFailures(), failuresBefore, 'nothing charged');
      assert.equal(await alive(s), true);
    });

    it('refuses a form without the session CSRF token, or with another session\'s', async () => {
      const u = await makeUser(tg.gw, 'dora');
      const s = await signIn(tg, 'dora', PASSWORD);
      const other = await signIn(tg, 'dora', PASSWORD);
      const before = await passwordHash(u.id);
      const fields = { current_password: PASSWORD, new_password: NEW_PASSWORD, new_password_confirm: NEW_PASSWORD };
      assert.equal((await post(s, '/security/password', fields)).status, 403);
      assert.equal((await post(s, '/security/password', { ...fields, _csrf: other.csrf })).status, 403);
      assert.equal((await post(s, '/security/sessions/end-others', { _csrf: other.csrf })).status, 403);
      assert.equal(await passwordHash(u.id), before);
      assert.equal(await alive(other), true);
    });

    it('counts a wrong current password towards the sign-in lockout before comparing, and locks sign-in too', async () => {
      const u = await makeUser(tg.gw, 'emil');
      const s = await signIn(tg, 'emil', PASSWORD);
      const csrf = hiddenField((await page(s, '/security/password')).text, '_csrf');
      const before = await passwordHash(u.id);
      const { maxFailures } = tg.gw.config.login;
      const wrong = { _csrf: csrf, current_password: 'not the password 1', new_password: NEW_PASSWORD, new_password_confirm: NEW_PASSWORD };
      for (let i = 0; i < maxFailures; i++) {
        const res = await post(s, '/security/password', wrong);
        assert.equal(res.status, 401, `attempt ${i + 1}`);
        assert.match(res.text, /The current password is incorrect/);
      }
      // Locked: even the right password is refused uncompared, here and at sign-in.
      const locked = await post(s, '/security/password', { ...wrong, current_password: PASSWORD });
      assert.equal(locked.status, 429);
      assert.ok(Number(locked.headers['retry-after']) > 0);
      assert.match(locked.text, /Too many wrong attempts/);
      assert.equal((await tg.http().post('/v1/login').send({ username: 'emil', password: PASSWORD })).status, 429);
      assert.equal(await passwordHash(u.id), before, 'the password is unchanged');
      const events = await tg.gw.store.db.selectFrom('audit_log').select('type').where('subject', '=', u.id).execute();
      assert.equal(events.filter((e) => e.type === 'user.password_change_failed').length, maxFailures + 1);
    });

    it('lets exactly one of two concurrent changes win', async () => {
      const u = await makeUser(tg.gw, 'fritz');
      const s = await signIn(tg, 'fritz', PASSWORD);
      const csrf = hiddenField((await page(s, '/security/password')).text, '_csrf');
      const results = await Promise.all(
        ['first new passphrase here 1', 'second new passphrase here 2'].map((p) => post(s, '/security/password', { _csrf: csrf, current_password: PASSWORD, new_password: p, new_password_confirm: p })),
      );
      const statuses = results.map((r) => r.status).sort();
      assert.equal(statuses.filter((x) => x === 303).length, 1, `one winner: ${statuses}`);
      const logins = await Promise.all(['first new passphrase here 1', 'second new passphrase here 2'].map((p) => tg.http().post('/v1/login').send({ username: 'fritz', password: p })));
      assert.deepEqual(logins.map((r) => r.status).sort(), [200, 401]);
      const changed = await tg.gw.store.db.selectFrom('audit_log').select('type').where('subject', '=', u.id).where('type', '=', 'user.password_changed').execute();
      assert.equal(changed.length, 1);
    });

    it('asks a user with a second factor to confirm it first: a stolen password alone changes nothing', async () => {
      const u = await makeUser(tg.gw, 'greta');
      await insertActiveTotp(tg.gw, u.id);
      tg.clock.advance(1); // enrolled before this sign-in
      const s = await signIn(tg, 'greta', PASSWORD);
      const form = await page(s, '/security/password');
      assert.match(form.text, /href="\/security\/confirm"/);
      assert.doesNotMatch(form.text, /name="current_password"/);
      const csrf = hiddenField(form.text, '_csrf');
      const before = await passwordHash(u.id);
      const res = await post(s, '/security/password', { _csrf: csrf, current_password: PASSWORD, new_password: NEW_PASSWORD, new_password_confirm: NEW_PASSWORD });
      assert.equal(res.status, 303);
      assert.equal(res.headers.location, '/security/confirm');
      assert.equal(await passwordHash(u.id), before);
      await confirmForTest(tg, s);
      const done = await post(s, '/security/password', { _csrf: csrf, current_password: PASSWORD, new_password: NEW_PASSWORD, new_password_confirm: NEW_PASSWORD });
      assert.equal(done.status, 303);
      assert.equal(done.headers.location, '/security?notice=passwordChanged');
      assert.notEqual(await passwordHash(u.id), before);
    });

    it('lists the signed-in devices and signs out one, or every other, of the user\'s own only', async () => {
      const u = await makeUser(tg.gw, 'hanna');
      const here = await signIn(tg, 'hanna', PASSWORD);
      const phone = await signIn(tg, 'hanna', PASSWORD);
      const laptop = await signIn(tg, 'hanna', PASSWORD);
      await makeUser(tg.gw, 'ivo');
      const stranger = await signIn(tg, 'ivo', PASSWORD);

      const list = await page(here, '/security/sessions');
      assert.equal(list.status, 200);
      const handles = [...list.text.matchAll(/data-session="([A-Za-z0-9_-]{22})"/g)].map((m) => m[1]!);
      assert.equal(handles.length, 3, 'only her own three sessions');
      assert.equal([...list.text.matchAll(/data-current="true"/g)].length, 1);
      assert.match(list.text, /Proven: password/);
      const csrf = hiddenField(list.text, '_csrf');
      const strangerHandle = [...(await page(stranger, '/security/sessions')).text.matchAll(/data-session="([A-Za-z0-9_-]{22})"/g)].map((m) => m[1]!)[0]!;

      // Someone else's session cannot be ended from here, nor can a malformed handle.
      for (const handle of [strangerHandle, 'not-a-handle', 'A'.repeat(22)]) {
        const res = await post(here, `/security/sessions/${handle}/end`, { _csrf: csrf });
        assert.equal(res.status, 303);
        assert.equal(res.headers.location, '/security/sessions?notice=error');
      }
      assert.equal(await alive(stranger), true);

      const otherHandle = handles.find((h) => !new RegExp(`data-session="${h}" data-current`).test(list.text))!;
      const ended = await post(here, `/security/sessions/${otherHandle}/end`, { _csrf: csrf });
      assert.equal(ended.headers.location, '/security/sessions?notice=ended');
      assert.equal([await alive(phone), await alive(laptop)].filter(Boolean).length, 1, 'one device signed out');
      const rest = await post(here, '/security/sessions/end-others', { _csrf: csrf });
      assert.equal(rest.headers.location, '/security/sessions?notice=othersEnded&count=1');
      assert.match((await page(here, rest.headers.location)).text, /1 other device\(s\) signed out/);
      assert.deepEqual([await alive(phone), await alive(laptop), await alive(here), await alive(stranger)], [false, false, true, true]);
      const events = await tg.gw.store.db.selectFrom('audit_log').select('type').where('subject', '=', u.id).where('type', 'in', ['session.ended', 'sessions.ended']).execute();
      assert.equal(events.length, 2);

      // Signing out this device is a sign-out.
      const mine = [...(await page(here, '/security/sessions')).text.matchAll(/data-session="([A-Za-z0-9_-]{22})"/g)].map((m) => m[1]!);
      const out = await post(here, `/security/sessions/${mine[0]}/end`, { _csrf: csrf });
      assert.equal(out.headers.location, '/login');
      assert.match(String(out.headers['set-cookie']), /stepgate_session=;/);
      assert.equal(await alive(here), false);
    });

    it('names each device by its browser and address, escaped, bounded, and keeps it across a password change', async () => {
      await makeUser(tg.gw, 'karl');
      const CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
      const hostile = `<script>alert(1)</script>\t Firefox/133.0 (X11; Linux x86_64) ${'z'.repeat(400)}`;
      const open = async (ua: string): Promise<SignedIn> => {
        const res = await tg.http().post('/v1/login').set('User-Agent', ua).send({ username: 'karl', password: PASSWORD });
        assert.equal(res.status, 200);
        return { cookie: `stepgate_session=${cookieFrom(res)}`, csrf: res.body.csrf_token as string, userId: res.body.user.id as string };
      };
      const desk = await open(CHROME);
      await open(hostile);
      const list = await page(desk, '/security/sessions');
      assert.match(list.text, /<strong>Chrome 131 on Windows<\/strong> · This device/);
      assert.match(list.text, /<strong>Firefox 133 on Linux<\/strong>/);
      assert.match(list.text, /from [:.\w]*127\.0\.0\.1/);
      assert.doesNotMatch(list.text, /<script>alert/);
      const zh = await page(desk, '/security/sessions', 'zh-CN');
      assert.match(zh.text, /Windows 上的 Chrome 131/);
      const api = await tg.http().get('/v1/me/sessions').set('Cookie', desk.cookie);
      assert.equal(api.status, 200);
      const mine = api.body.sessions.find((x: { current: boolean }) => x.current);
      assert.equal(mine.user_agent, CHROME);
      assert.equal(mine.device, 'Chrome 131 on Windows');
      assert.match(mine.ip, /127\.0\.0\.1/);
      const other = api.body.sessions.find((x: { current: boolean }) => !x.current);
      assert.equal(other.user_agent.length, 256, 'bounded');
      assert.ok(!other.user_agent.includes('\t'), 'no control characters');
      // The session a password change opens is for the same browser.
      const csrf = hiddenField(list.text, '_csrf');
      const changed = await tg.http().post('/security/password').set('Cookie', desk.cookie).set('User-Agent', CHROME).type('form').send({ _csrf: csrf, current_password: PASSWORD, new_password: NEW_PASSWORD, new_password_confirm: NEW_PASSWORD });
      assert.equal(changed.status, 303);
      const renewed = await tg.http().get('/v1/me/sessions').set('Cookie', `stepgate_session=${cookieFrom(changed)}`);
      assert.deepEqual(renewed.body.sessions.map((x: { device: string }) => x.device), ['Chrome 131 on Windows']);
    });

    it('needs a fresh sign-in to sign a device out: a session left open cannot end the others', async () => {
      await makeUser(tg.gw, 'jonas');
      const old = await signIn(tg, 'jonas', PASSWORD);
      tg.clock.advance(tg.gw.config.session.freshSeconds + 1);
      const recent = await signIn(tg, 'jonas', PASSWORD);
      const list = await page(old, '/security/sessions');
      assert.match(list.text, /id="reauth-hint"/);
      assert.match(list.text, /href="\/login\?reauth=1&amp;next=%2Fsecurity%2Fsessions"/);
      const csrf = hiddenField(list.text, '_csrf');
      const res = await post(old, '/security/sessions/end-others', { _csrf: csrf });
      assert.equal(res.status, 303);
      assert.equal(res.headers.location, '/login?reauth=1&next=%2Fsecurity%2Fsessions');
      assert.equal(await alive(recent), true, 'nothing ended');
      const handle = [...list.text.matchAll(/data-session="([A-Za-z0-9_-]{22})"/g)].map((m) => m[1]!)[0]!;
      assert.equal((await post(old, `/security/sessions/${handle}/end`, { _csrf: csrf })).headers.location, '/login?reauth=1&next=%2Fsecurity%2Fsessions');
      assert.equal(await alive(recent), true);
    });
  });
}
