import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loginThrottleKey, normaliseUsername } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { cookieFrom, signIn, type SignedIn } from '../helpers/session.ts';
import { makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * POST /v1/me/password (ASVS 5.0 V6.2.2, V6.2.3, V7.4.3): a signed-in user changes their
 * password with the current one. The current password is charged to the sign-in lockout
 * before it is compared, the new one meets the policy, every session ends and the browser
 * gets a new one; refusals change nothing they need not.
 */

const NEW_PASSWORD = 'violet tram under the bridge 7';
const MAX = 4;

for (const dialect of testDialects()) {
  describe(`changing one's own password (${dialect})`, () => {
    let tg: TestGateway;
    let n = 0;
    before(async () => {
      tg = await createTestGateway({ dialect, config: { login: { maxFailures: MAX, lockSeconds: 300, delayBaseSeconds: 0 } } });
    });
    after(async () => {
      await tg.close();
    });

    async function freshUser(): Promise<{ name: string; session: SignedIn }> {
      n += 1;
      const name = `pat-${n}`;
      await makeUser(tg.gw, name);
      return { name, session: await signIn(tg, name, PASSWORD) };
    }
    const change = (s: SignedIn, body: Record<string, unknown>) => tg.http().post('/v1/me/password').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send(body);
    const hashOf = async (userId: string) => (await tg.gw.store.db.selectFrom('factors').select('secret_hash').where('user_id', '=', userId).where('type', '=', 'password').executeTakeFirstOrThrow()).secret_hash;
    const failures = async (name: string) => Number((await tg.gw.store.db.selectFrom('login_throttle').select('failures').where('key', '=', loginThrottleKey(tg.gw, normaliseUsername(name))).executeTakeFirst())?.failures ?? 0);

    it('changes it: the old password stops working, the new one works, every session ends, this browser gets a new one', async () => {
      const { name, session } = await freshUser();
      const other = await signIn(tg, name, PASSWORD);
      const res = await change(session, { current_password: PASSWORD, new_password: NEW_PASSWORD });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['cache-control'], 'no-store');
      const cookie = cookieFrom(res);
      assert.ok(cookie !== undefined && typeof res.body.csrf_token === 'string');
      for (const dead of [session.cookie, other.cookie]) assert.equal((await tg.http().get('/v1/me').set('Cookie', dead)).status, 401, 'old sessions ended');
      assert.equal((await tg.http().get('/v1/me').set('Cookie', `stepgate_session=${cookie}`)).status, 200, 'the new session works');
      assert.equal((await tg.http().post('/v1/login').send({ username: name, password: PASSWORD })).status, 401);
      assert.equal((await tg.http().post('/v1/login').send({ username: name, password: NEW_PASSWORD })).status, 200);
      const events = await tg.gw.store.db.selectFrom('audit_log').select(['type', 'data']).where('subject', '=', session.userId).where('type', '=', 'user.password_changed').execute();
      assert.equal(events.length, 1);
      assert.equal(JSON.parse(events[0]!.data).sessions_ended, 2);
      assert.ok(!tg.logs.text.includes(NEW_PASSWORD) && !tg.logs.text.includes(PASSWORD), 'no password in the logs');
    });

    it('a wrong current password is 401 on /current_password, counted towards the sign-in lockout, and changes nothing else', async () => {
      const { name, session } = await freshUser();
      const before = await hashOf(session.userId);
      const res = await change(session, { current_password: 'not my password at all', new_password: NEW_PASSWORD });
      assert.equal(res.status, 401);
      assert.equal(res.body.code, 'invalid_credentials');
      assert.deepEqual(res.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/current_password']);
      assert.equal(await failures(name), 1, 'charged');
      assert.equal(await hashOf(session.userId), before);
      assert.equal((await tg.http().get('/v1/me').set('Cookie', session.cookie)).status, 200, 'the session is not ended by a failure');
    });

    it(`guessing through this form hits the same lock as sign-in: after ${MAX} failures even the right password is refused, here and at sign-in`, async () => {
      const { name, session } = await freshUser();
      // In parallel, as a script would: exactly MAX are compared.
      const guesses = await Promise.all(Array.from({ length: MAX * 3 }, (_, i) => change(session, { current_password: `guess number ${i}`, new_password: NEW_PASSWORD })));
      assert.equal(guesses.filter((g) => g.status === 401).length, MAX, guesses.map((g) => g.status).join(','));
      assert.equal(guesses.filter((g) => g.status === 429).length, MAX * 2);
      assert.equal(await failures(name), MAX);
      const right = await change(session, { current_password: PASSWORD, new_password: NEW_PASSWORD });
      assert.equal(right.status, 429, right.text);
      assert.ok(Number(right.headers['retry-after']) >= 1);
      assert.equal((await tg.http().post('/v1/login').send({ username: name, password: PASSWORD })).status, 429, 'the sign-in is locked too');
    });

    it('a new password the policy refuses is 400 on /new_password and charges nothing', async () => {
      const { name, session } = await freshUser();
      const before = await hashOf(session.userId);
      for (const bad of ['short', 'password123', name, 'x'.repeat(200)]) {
        const res = await change(session, { current_password: PASSWORD, new_password: bad });
        assert.equal(res.status, 400, `${bad}: ${res.text}`);
        assert.equal(res.body.code, 'password_policy');
        assert.deepEqual(res.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/new_password']);
      }
      assert.equal(await failures(name), 0);
      assert.equal(await hashOf(session.userId), before);
    });

    it('needs a session and its CSRF token; a bad body names the field', async () => {
      const { session } = await freshUser();
      const before = await hashOf(session.userId);
      const body = { current_password: PASSWORD, new_password: NEW_PASSWORD };
      assert.equal((await tg.http().post('/v1/me/password').send(body)).status, 401);
      const noCsrf = await tg.http().post('/v1/me/password').set('Cookie', session.cookie).send(body);
      assert.equal(noCsrf.status, 403);
      assert.equal(noCsrf.body.code, 'csrf_failed');
      const missing = await change(session, { current_password: PASSWORD });
      assert.equal(missing.status, 400);
      assert.ok(missing.body.invalid_params.some((p: { pointer: string }) => p.pointer === '/new_password'));
      assert.equal(await hashOf(session.userId), before, 'none of these changed the password');
    });

    it('two concurrent changes with the right current password: exactly one wins, the other changes nothing', async () => {
      const { name, session } = await freshUser();
      const [a, b] = await Promise.all([
        change(session, { current_password: PASSWORD, new_password: 'first new password for me 1' }),
        change(session, { current_password: PASSWORD, new_password: 'second new password for me 2' }),
      ]);
      const statuses = [a.status, b.status].sort();
      assert.ok(statuses[0] === 200 && statuses[1] !== 200, `${a.status} ${a.text} / ${b.status} ${b.text}`);
      const winner = a.status === 200 ? 'first new password for me 1' : 'second new password for me 2';
      const loser = a.status === 200 ? 'second new password for me 2' : 'first new password for me 1';
      assert.equal((await tg.http().post('/v1/login').send({ username: name, password: winner })).status, 200);
      assert.equal((await tg.http().post('/v1/login').send({ username: name, password: loser })).status, 401);
    });
  });
}
