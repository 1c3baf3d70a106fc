import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import cookieParser from 'cookie-parser';
import express from 'express';
import request, { type Response } from 'supertest';
import { hashToken } from '../../src/crypto/ids.ts';
import { createSession } from '../../src/flows/sessions.ts';
import { createUser, setPassword, setUserStatus } from '../../src/flows/users.ts';
import { requireRole, requireSession } from '../../src/http/authorize.ts';
import { errorHandler } from '../../src/http/error-handler.ts';
import { locals, requestId } from '../../src/http/request-context.ts';
import { loadSession } from '../../src/http/session.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

const PASSWORD = 'orchid-lantern-93';
const CONFIG = { login: { maxFailures: 5, delayBaseSeconds: 0 }, session: { idleSeconds: 600, absoluteSeconds: 3600 } };

function sessionIdFrom(res: Response, name = 'stepgate_session'): string | undefined {
  const raw = res.headers['set-cookie'] as unknown;
  const list = Array.isArray(raw) ? (raw as string[]) : [];
  const c = list.find((x) => x.startsWith(`${name}=`));
  const value = c?.split(';')[0]?.slice(name.length + 1);
  return value === undefined || value === '' ? undefined : value;
}

for (const dialect of testDialects()) {
  describe(`sessions and CSRF (${dialect})`, () => {
    let tg: TestGateway;

    before(async () => {
      tg = await createTestGateway({ dialect, config: CONFIG });
    });
    after(async () => {
      await tg.close();
    });

    async function signIn(username: string): Promise<{ sid: string; csrf: string; userId: string }> {
      const res = await tg.http().post('/v1/login').send({ username, password: PASSWORD });
      assert.equal(res.status, 200, res.text);
      const sid = sessionIdFrom(res);
      assert.ok(sid !== undefined);
      return { sid, csrf: res.body.csrf_token as string, userId: res.body.user.id as string };
    }
    const me = (sid: string) => tg.http().get('/v1/me').set('Cookie', `stepgate_session=${sid}`);
    const sessionCount = async (userId: string) =>
      (await tg.gw.store.db.selectFrom('sessions').select('id_hash').where('user_id', '=', userId).execute()).length;

    it('GET /v1/me without a session is 401 problem+json', async () => {
      const res = await tg.http().get('/v1/me');
      assert.equal(res.status, 401);
      assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
      assert.equal(JSON.parse(res.text).code, 'unauthorized');
    });

    it('a forged or unknown cookie is no session, and is cleared', async () => {
      const res = await me('forged-session-id-000000000000000000000000000');
      assert.equal(res.status, 401);
      const raw = res.headers['set-cookie'] as unknown as string[];
      assert.ok(raw.some((c) => c.startsWith('stepgate_session=;')), 'cookie cleared');
    });

    it('rotates the session id at login: the old session is destroyed, a new id issued', async () => {
      await createUser(tg.gw, { username: 'quinn', password: PASSWORD }, { actor: 'cli' });
      const first = await signIn('quinn');
      const again = await tg.http()
        .post('/v1/login')
        .set('Cookie', `stepgate_session=${first.sid}`)
        .set('X-CSRF-Token', first.csrf)
        .send({ username: 'quinn', password: PASSWORD });
      assert.equal(again.status, 200);
      const second = sessionIdFrom(again);
      assert.ok(second !== undefined);
      assert.notEqual(second, first.sid);
      assert.notEqual(again.body.csrf_token, first.csrf, 'a new CSRF token too');
      assert.equal((await me(first.sid)).status, 401, 'the old id is dead');
      assert.equal((await me(second)).status, 200);
      const old = await tg.gw.store.db.selectFrom('sessions').selectAll().where('id_hash', '=', hashToken(first.sid)).executeTakeFirst();
      assert.equal(old, undefined);
      assert.equal(await sessionCount(first.userId), 1);
    });

    it('ignores a fixated (attacker-chosen) session id at login', async () => {
      const fixed = 'attacker-chosen-session-id-aaaaaaaaaaaaaaaaaaa';
      const res = await tg.http().post('/v1/login').set('Cookie', `stepgate_session=${fixed}`).send({ username: 'quinn', password: PASSWORD });
      assert.equal(res.status, 200);
      const sid = sessionIdFrom(res);
      assert.notEqual(sid, fixed);
      assert.equal((await me(fixed)).status, 401);
    });

    it('CSRF (JSON): a state-changing request with a session needs X-CSRF-Token; nothing changes without it', async () => {
      const s = await signIn('quinn');
      const missing = await tg.http().post('/v1/logout').set('Cookie', `stepgate_session=${s.sid}`);
      assert.equal(missing.status, 403);
      assert.equal(JSON.parse(missing.text).code, 'csrf_failed');
      const wrong = await tg.http().post('/v1/logout').set('Cookie', `stepgate_session=${s.sid}`).set('X-CSRF-Token', `${s.csrf}x`);
      assert.equal(wrong.status, 403);
      const otherSessions = await signIn('quinn');
      const foreign = await tg.http().post('/v1/logout').set('Cookie', `stepgate_session=${s.sid}`).set('X-CSRF-Token', otherSessions.csrf);
      assert.equal(foreign.status, 403, "another session's token is not this session's");
      assert.equal((await me(s.sid)).status, 200, 'still signed in');

      // A login with a live session is state-changing too: refused, and no new session made.
      const before = await sessionCount(s.userId);
      const relogin = await tg.http().post('/v1/login').set('Cookie', `stepgate_session=${s.sid}`).send({ username: 'quinn', password: PASSWORD });
      assert.equal(relogin.status, 403);
      assert.equal(await sessionCount(s.userId), before);

      const ok = await tg.http().post('/v1/logout').set('Cookie', `stepgate_session=${s.sid}`).set('X-CSRF-Token', s.csrf);
      assert.equal(ok.status, 204);
      assert.equal((await me(s.sid)).status, 401);
    });

    it('CSRF (form): the _csrf field must match; the JSON body cannot carry it', async () => {
      const s = await signIn('quinn');
      const none = await tg.http().post('/logout').set('Cookie', `stepgate_session=${s.sid}`).type('form').send({});
      assert.equal(none.status, 403);
      const wrong = await tg.http().post('/logout').set('Cookie', `stepgate_session=${s.sid}`).type('form').send({ _csrf: 'nope' });
      assert.equal(wrong.status, 403);
      const asJson = await tg.http().post('/v1/logout').set('Cookie', `stepgate_session=${s.sid}`).send({ _csrf: s.csrf });
      assert.equal(asJson.status, 403);
      assert.equal((await me(s.sid)).status, 200);
      const ok = await tg.http().post('/logout').set('Cookie', `stepgate_session=${s.sid}`).type('form').send({ _csrf: s.csrf });
      assert.equal(ok.status, 303);
      assert.equal(ok.headers.location, '/login');
      assert.equal((await me(s.sid)).status, 401);
    });

    it('safe methods and requests without a session need no token', async () => {
      const s = await signIn('quinn');
      assert.equal((await me(s.sid)).status, 200);
      assert.equal((await tg.http().post('/v1/logout')).status, 204);
    });

    it('logout ends the session server-side, clears the cookie and is audited', async () => {
      const s = await signIn('quinn');
      const res = await tg.http().post('/v1/logout').set('Cookie', `stepgate_session=${s.sid}`).set('X-CSRF-Token', s.csrf);
      assert.equal(res.status, 204);
      const raw = res.headers['set-cookie'] as unknown as string[];
      assert.ok(raw.some((c) => c.startsWith('stepgate_session=;')));
      assert.equal((await me(s.sid)).status, 401, 'replaying the cookie does not work');
      const ended = await tg.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'session.ended').where('subject', '=', s.userId).execute();
      assert.ok(ended.length >= 1);
    });

    it('ends an idle session; activity keeps it alive', async () => {
      const s = await signIn('quinn');
      tg.clock.advance(590);
      assert.equal((await me(s.sid)).status, 200);
      tg.clock.advance(590);
      assert.equal((await me(s.sid)).status, 200, 'the previous request moved the idle deadline');
      tg.clock.advance(600);
      assert.equal((await me(s.sid)).status, 401);
      const row = await tg.gw.store.db.selectFrom('sessions').selectAll().where('id_hash', '=', hashToken(s.sid)).executeTakeFirst();
      assert.equal(row, undefined, 'the dead row is deleted');
    });

    it('ends a session at its absolute deadline however active it is', async () => {
      const s = await signIn('quinn');
      for (let elapsed = 0; elapsed < 3600 - 500; elapsed += 500) {
        tg.clock.advance(500);
        assert.equal((await me(s.sid)).status, 200);
      }
      tg.clock.advance(500);
      assert.equal((await me(s.sid)).status, 401);
    });

    it('disabling a user or setting a password ends their sessions', async () => {
      const u = await createUser(tg.gw, { username: 'rita', password: PASSWORD }, { actor: 'cli' });
      const a = await signIn('rita');
      await setPassword(tg.gw, u.id, 'new-orchid-lantern-94', { actor: 'cli' });
      assert.equal((await me(a.sid)).status, 401);
      const b = await tg.http().post('/v1/login').send({ username: 'rita', password: 'new-orchid-lantern-94' });
      assert.equal(b.status, 200);
      const sid = sessionIdFrom(b) ?? '';
      await setUserStatus(tg.gw, u.id, 'disabled', { actor: 'cli' }, 'test');
      assert.equal((await me(sid)).status, 401);
      // A session row that outlives a disable (written concurrently) is still not honoured.
      await setUserStatus(tg.gw, u.id, 'active', { actor: 'cli' }, 'test');
      const c = await createSession(tg.gw, u.id, ['pwd']);
      await tg.gw.store.db.updateTable('users').set({ status: 'disabled' }).where('id', '=', u.id).execute();
      assert.equal((await me(c.sessionId)).status, 401);
    });

    it('createSession issues a working session (the contract other flows use)', async () => {
      const u = await createUser(tg.gw, { username: 'sam', password: PASSWORD, roles: ['auditor'] }, { actor: 'cli' });
      const s = await createSession(tg.gw, u.id, ['pwd', 'otp']);
      assert.equal(s.expiresAt.getTime(), tg.clock.now().getTime() + 3600 * 1000);
      const res = await me(s.sessionId);
      assert.equal(res.status, 200);
      assert.equal(res.body.csrf_token, s.csrfToken);
      assert.deepEqual(res.body.session.amr, ['pwd', 'otp']);
      assert.equal(res.body.session.expires_at, s.expiresAt.toISOString());
    });

    it('requireSession and requireRole answer 401 and 403', async () => {
      const admin = await createUser(tg.gw, { username: 'tara', password: PASSWORD, roles: ['admin'] }, { actor: 'cli' });
      const plain = await createUser(tg.gw, { username: 'uma', password: PASSWORD }, { actor: 'cli' });
      const app = express();
      app.use(requestId);
      app.use(express.json());
      app.use(cookieParser());
      app.use(loadSession(tg.gw));
      app.get('/any', requireSession, (_req, res) => {
        res.json({ user: locals(res).auth?.userId });
      });
      app.get('/admin', requireRole('admin'), (_req, res) => {
        res.json({ ok: true });
      });
      app.get('/staff', requireRole('helpdesk', 'admin'), (_req, res) => {
        res.json({ ok: true });
      });
      app.use(errorHandler(tg.gw.logger));
      const sa = (await createSession(tg.gw, admin.id, ['pwd'])).sessionId;
      const sp = (await createSession(tg.gw, plain.id, ['pwd'])).sessionId;
      const get = (path: string, sid?: string) => {
        const r = request(app).get(path);
        return sid === undefined ? r : r.set('Cookie', `stepgate_session=${sid}`);
      };
      assert.equal((await get('/any')).status, 401);
      assert.equal((await get('/admin')).status, 401);
      assert.equal((await get('/any', sp)).body.user, plain.id);
      const forbidden = await get('/admin', sp);
      assert.equal(forbidden.status, 403);
      assert.equal(JSON.parse(forbidden.text).code, 'forbidden');
      assert.equal((await get('/admin', sa)).status, 200);
      assert.equal((await get('/staff', sa)).status, 200);
      assert.equal((await get('/staff', sp)).status, 403);
      assert.throws(() => requireRole(), TypeError);
    });
  });
}

describe('session cookie in production mode (sqlite)', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await createTestGateway({ config: { ...CONFIG, mode: 'production', http: { publicUrl: 'https://mfa.example.com' } } });
    await createUser(tg.gw, { username: 'victor', password: PASSWORD }, { actor: 'cli' });
  });
  after(async () => {
    await tg.close();
  });

  it('is __Host-stepgate_session with Secure, HttpOnly, SameSite=Lax, Path=/ and no Domain', async () => {
    const res = await tg.http().post('/v1/login').send({ username: 'victor', password: PASSWORD });
    assert.equal(res.status, 200);
    const raw = res.headers['set-cookie'] as unknown as string[];
    const cookie = raw.find((c) => c.startsWith('__Host-stepgate_session='));
    assert.ok(cookie !== undefined, raw.join(' | '));
    assert.match(cookie, /; Secure/);
    assert.match(cookie, /; HttpOnly/);
    assert.match(cookie, /; SameSite=Lax/);
    assert.match(cookie, /; Path=\//);
    assert.doesNotMatch(cookie, /Domain=/i);
    const sid = sessionIdFrom(res, '__Host-stepgate_session') ?? '';
    assert.equal((await tg.http().get('/v1/me').set('Cookie', `__Host-stepgate_session=${sid}`)).status, 200);
    assert.equal((await tg.http().get('/v1/me').set('Cookie', `stepgate_session=${sid}`)).status, 401, 'the unprefixed name is not read');
  });
});
