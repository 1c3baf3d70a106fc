import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hashToken } from '../../src/crypto/ids.ts';
import { createSession } from '../../src/flows/sessions.ts';
import { createUser, type Role } from '../../src/flows/users.ts';
import { sessionCookieName } from '../../src/http/session.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * Sessions a user can see and end (ASVS 5.0 V7.5.2), and an operator's "end this user's
 * sessions" (V7.4.5): only one's own, only after a fresh sign-in, CSRF-checked, audited;
 * the listing never shows a session id or the hash it is stored under.
 */

interface Browser {
  cookie: string;
  csrf: string;
  id: string;
}

for (const dialect of testDialects()) {
  describe(`own sessions and ending them (${dialect})`, () => {
    let tg: TestGateway;
    let n = 0;
    before(async () => {
      tg = await createTestGateway({ dialect });
    });
    after(async () => {
      await tg.close();
    });

    async function user(roles: Role[] = []): Promise<string> {
      n += 1;
      return (await createUser(tg.gw, { username: `sess-${n}`, password: PASSWORD, roles }, { actor: 'test' })).id;
    }
    async function browser(userId: string): Promise<Browser> {
      const s = await createSession(tg.gw, userId, ['pwd']);
      return { cookie: `${sessionCookieName(tg.config)}=${s.sessionId}`, csrf: s.csrfToken, id: s.sessionId };
    }
    const alive = async (b: Browser) => (await tg.http().get('/v1/me').set('Cookie', b.cookie)).status === 200;
    const list = (b: Browser) => tg.http().get('/v1/me/sessions').set('Cookie', b.cookie);
    const end = (b: Browser, handle: string) => tg.http().delete(`/v1/me/sessions/${handle}`).set('Cookie', b.cookie).set('X-CSRF-Token', b.csrf);

    it('lists the live sessions, marks this one, and shows neither an id nor its stored hash', async () => {
      const u = await user();
      const [a, b] = [await browser(u), await browser(u)];
      const res = await list(a);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.sessions.length, 2);
      assert.deepEqual(res.body.sessions.map((s: { current: boolean }) => s.current).sort(), [false, true]);
      for (const secret of [a.id, b.id, hashToken(a.id), hashToken(b.id), a.csrf, b.csrf]) assert.ok(!res.text.includes(secret));
      assert.equal((await tg.http().get('/v1/me/sessions')).status, 401);
    });

    it('ends another of its own sessions by handle: that one is dead, this one lives, audited', async () => {
      const u = await user();
      const [a, b] = [await browser(u), await browser(u)];
      const other = (await list(a)).body.sessions.find((s: { current: boolean }) => !s.current) as { handle: string };
      const res = await end(a, other.handle);
      assert.equal(res.status, 204, res.text);
      assert.equal(await alive(b), false);
      assert.equal(await alive(a), true);
      const events = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'session.ended').where('subject', '=', u).execute();
      assert.equal(events.length, 1);
      assert.equal((await end(a, other.handle)).status, 404, 'gone now');
    });

    it('ending the current session signs out and clears the cookie', async () => {
      const a = await browser(await user());
      const mine = (await list(a)).body.sessions[0] as { handle: string };
      const res = await end(a, mine.handle);
      assert.equal(res.status, 204);
      assert.match(String(res.headers['set-cookie']), new RegExp(`${sessionCookieName(tg.config)}=;`));
      assert.equal(await alive(a), false);
    });

    it("another user's handle is 404 and ends nothing; a malformed handle is 404 too", async () => {
      const [mallory, victim] = [await browser(await user()), await browser(await user())];
      const victims = (await list(victim)).body.sessions[0] as { handle: string };
      assert.equal((await end(mallory, victims.handle)).status, 404);
      assert.equal(await alive(victim), true);
      assert.equal((await end(mallory, 'not-a-handle')).status, 404);
    });

    it('needs the CSRF token and a fresh sign-in; refused, nothing ends', async () => {
      const u = await user();
      const [a, b] = [await browser(u), await browser(u)];
      const other = (await list(a)).body.sessions.find((s: { current: boolean }) => !s.current) as { handle: string };
      const noCsrf = await tg.http().delete(`/v1/me/sessions/${other.handle}`).set('Cookie', a.cookie);
      assert.equal(noCsrf.status, 403);
      assert.equal(noCsrf.body.code, 'csrf_failed');
      tg.clock.advance(tg.config.session.freshSeconds + 1);
      const stale = await end(a, other.handle);
      assert.equal(stale.status, 401);
      assert.equal(stale.body.code, 'fresh_login_required');
      const staleOthers = await tg.http().post('/v1/me/sessions/end-others').set('Cookie', a.cookie).set('X-CSRF-Token', a.csrf);
      assert.equal(staleOthers.body.code, 'fresh_login_required');
      assert.equal(await alive(b), true);
    });

    it('ends all the others at once and keeps this one', async () => {
      const u = await user();
      const mine = await browser(u);
      const others = [await browser(u), await browser(u), await browser(u)];
      const res = await tg.http().post('/v1/me/sessions/end-others').set('Cookie', mine.cookie).set('X-CSRF-Token', mine.csrf);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.sessions_ended, 3);
      for (const o of others) assert.equal(await alive(o), false);
      assert.equal(await alive(mine), true);
    });

    it('an operator ends every session of a user, with a reason; helpdesk cannot do it to an administrator, auditors not at all', async () => {
      const admin = await browser(await user(['admin']));
      const desk = await browser(await user(['helpdesk']));
      const auditor = await browser(await user(['auditor']));
      const target = await user();
      const targets = [await browser(target), await browser(target)];
      const post = (op: Browser, id: string, body: object) => tg.http().post(`/v1/admin/users/${id}/sessions/end`).set('Cookie', op.cookie).set('X-CSRF-Token', op.csrf).send(body);
      const noReason = await post(desk, target, {});
      assert.equal(noReason.status, 400);
      assert.ok(noReason.body.invalid_params.some((p: { pointer: string }) => p.pointer === '/reason'));
      assert.equal((await post(auditor, target, { reason: 'looked odd' })).status, 403);
      for (const t of targets) assert.equal(await alive(t), true, 'refusals ended nothing');
      const done = await post(desk, target, { reason: 'laptop stolen' });
      assert.equal(done.status, 200, done.text);
      assert.equal(done.body.sessions_ended, 2);
      for (const t of targets) assert.equal(await alive(t), false);
      const adminTarget = await user(['admin']);
      const adminBrowser = await browser(adminTarget);
      assert.equal((await post(desk, adminTarget, { reason: 'not allowed' })).status, 403);
      assert.equal(await alive(adminBrowser), true);
      assert.equal((await post(admin, adminTarget, { reason: 'rotating' })).status, 200);
      const event = await tg.gw.store.db.selectFrom('audit_log').select(['actor', 'data']).where('type', '=', 'sessions.ended').where('subject', '=', target).executeTakeFirstOrThrow();
      assert.deepEqual(JSON.parse(event.data), { by: 'operator', reason: 'laptop stolen', sessions_ended: 2 });
    });
  });
}
