import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Response } from 'supertest';
import { PasswordHasher } from '../../src/factors/password/hasher.ts';
import { normalisePassword } from '../../src/factors/password/policy.ts';
import { failureDelaySeconds } from '../../src/flows/login.ts';
import { createUser, loginThrottleKey, normaliseUsername, passwordServices, setUserStatus } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

const PASSWORD = 'orchid-lantern-93';
const CONFIG = { login: { maxFailures: 5, lockSeconds: 60, delayAfterFailures: 100, delayBaseSeconds: 0 } };

function problemWithoutRequestId(res: Response): Record<string, unknown> {
  const { request_id: _ignored, ...rest } = JSON.parse(res.text) as Record<string, unknown>;
  return rest;
}

function cookieHeader(res: Response): string[] {
  const raw = res.headers['set-cookie'] as unknown;
  return Array.isArray(raw) ? (raw as string[]) : typeof raw === 'string' ? [raw] : [];
}

for (const dialect of testDialects()) {
  describe(`password login (${dialect})`, () => {
    let tg: TestGateway;

    before(async () => {
      tg = await createTestGateway({ dialect, config: CONFIG });
    });
    after(async () => {
      await tg.close();
    });

    const login = (username: string, password: string) => tg.http().post('/v1/login').send({ username, password });
    const throttleRow = (username: string) =>
      tg.gw.store.db.selectFrom('login_throttle').selectAll().where('key', '=', loginThrottleKey(tg.gw, normaliseUsername(username))).executeTakeFirst();
    const auditOf = (type: string) => tg.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', type).orderBy('seq').execute();

    it('signs in: 200 with the user, a CSRF token, the expiry and a session cookie', async () => {
      const user = await createUser(tg.gw, { username: 'alice', displayName: 'Alice Liddell', password: PASSWORD, roles: ['helpdesk'] }, { actor: 'cli' });
      const res = await login('alice', PASSWORD);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.user.id, user.id);
      assert.equal(res.body.user.username, 'alice');
      assert.equal(res.body.user.display_name, 'Alice Liddell');
      assert.deepEqual(res.body.user.roles, ['helpdesk']);
      assert.equal(typeof res.body.csrf_token, 'string');
      assert.ok(res.body.csrf_token.length >= 32);
      assert.equal(res.body.expires_at, new Date(tg.clock.now().getTime() + tg.config.session.absoluteSeconds * 1000).toISOString());
      assert.equal(res.headers['cache-control'], 'no-store');

      const cookie = cookieHeader(res).find((c) => c.startsWith('stepgate_session='));
      assert.ok(cookie !== undefined, 'session cookie set');
      assert.match(cookie, /; HttpOnly/i);
      assert.match(cookie, /; SameSite=Lax/i);
      assert.match(cookie, /; Path=\//i);
      assert.doesNotMatch(cookie, /; Secure/i, 'no Secure outside production (http://localhost)');
      const sessionId = cookie.split(';')[0]?.split('=')[1] ?? '';
      assert.ok(sessionId.length >= 43, '256-bit id');

      // The database holds only the hash of the id.
      const rows = await tg.gw.store.db.selectFrom('sessions').selectAll().where('user_id', '=', user.id).execute();
      assert.equal(rows.length, 1);
      assert.notEqual(rows[0]?.id_hash, sessionId);

      const me = await tg.http().get('/v1/me').set('Cookie', `stepgate_session=${sessionId}`);
      assert.equal(me.status, 200);
      assert.equal(me.body.user.id, user.id);
      assert.equal(me.body.csrf_token, res.body.csrf_token);
      assert.deepEqual(me.body.session.amr, ['pwd']);

      const succeeded = await auditOf('login.succeeded');
      assert.equal(succeeded.at(-1)?.subject, user.id);
      assert.equal(await throttleRow('alice'), undefined, 'success leaves no failure count');
      assert.match(await tg.gw.metrics.registry.getSingleMetricAsString('stepgate_login_total'), /outcome="success"} 1/);
    });

    it('normalises the login name (NFKC, case, surrounding spaces)', async () => {
      await createUser(tg.gw, { username: 'Bob.Smith', password: PASSWORD }, { actor: 'cli' });
      assert.equal((await login('  ＢＯＢ.smith ', PASSWORD)).status, 200);
    });

    it('answers an unknown user exactly like a wrong password', async () => {
      await createUser(tg.gw, { username: 'carol', password: PASSWORD }, { actor: 'cli' });
      const wrong = await login('carol', 'not-her-password-1');
      const unknown = await login('nobody-here', 'not-her-password-1');
      assert.equal(wrong.status, 401);
      assert.equal(unknown.status, 401);
      assert.equal(wrong.body.code, 'invalid_credentials');
      assert.deepEqual(problemWithoutRequestId(unknown), problemWithoutRequestId(wrong));
      assert.equal(unknown.headers['content-type'], wrong.headers['content-type']);
      assert.equal(unknown.headers['www-authenticate'], wrong.headers['www-authenticate']);
      assert.deepEqual(cookieHeader(unknown), cookieHeader(wrong));
      // Both were charged to their name's throttle row.
      assert.equal((await throttleRow('carol'))?.failures, 1);
      assert.equal((await throttleRow('nobody-here'))?.failures, 1);
    });

    it('runs exactly one argon2 verification, and no hashing, whether the user exists or not', async (t) => {
      // Equal work, not a stopwatch: the unknown-user path verifies against a dummy hash
      // made at start-up, the wrong-password path against the user's hash.
      const { hasher } = passwordServices(tg.gw);
      const carlos = await createUser(tg.gw, { username: 'carlos', password: PASSWORD }, { actor: 'cli' });
      const dina = await createUser(tg.gw, { username: 'dina', password: PASSWORD }, { actor: 'cli' });
      await setUserStatus(tg.gw, dina.id, 'disabled', { actor: 'cli' }, 'test');
      const noPassword = await createUser(tg.gw, { username: 'nopass', password: PASSWORD }, { actor: 'cli' });
      await tg.gw.store.db.deleteFrom('factors').where('user_id', '=', noPassword.id).execute();
      const verify = t.mock.method(hasher, 'verify');
      const hash = t.mock.method(hasher, 'hash');
      const cases: [string, string, string][] = [
        ['unknown user', 'nobody-at-all', 'not-the-password-1'],
        ['wrong password', 'carlos', 'not-the-password-1'],
        ['disabled user, right password', 'dina', PASSWORD],
        ['user without a password', 'nopass', PASSWORD],
      ];
      const answers: Response[] = [];
      for (const [label, username, password] of cases) {
        const verifiesBefore = verify.mock.callCount();
        const hashesBefore = hash.mock.callCount();
        const res = await login(username, password);
        assert.equal(res.status, 401, label);
        assert.equal(verify.mock.callCount() - verifiesBefore, 1, `${label}: one argon2 verification`);
        assert.equal(hash.mock.callCount() - hashesBefore, 0, `${label}: no hashing`);
        answers.push(res);
      }
      // …and the same answer: status, body (but the request id), headers that matter.
      const [first, ...rest] = answers as [Response, ...Response[]];
      for (const res of rest) {
        assert.deepEqual(problemWithoutRequestId(res), problemWithoutRequestId(first));
        for (const h of ['content-type', 'www-authenticate', 'cache-control', 'retry-after']) assert.equal(res.headers[h], first.headers[h], h);
        assert.deepEqual(cookieHeader(res), cookieHeader(first));
      }
      assert.ok(carlos.id !== undefined);

      // Not even the very first unknown-user login of a fresh gateway hashes (the dummy is
      // made at start-up). Other argon2 parameters: a dummy no earlier gateway has made.
      const fresh = await createTestGateway({ dialect, database: tg.database, config: { ...CONFIG, password: { argon2: { memoryKiB: 19457 } } } });
      try {
        const freshHash = t.mock.method(passwordServices(fresh.gw).hasher, 'hash');
        const freshVerify = t.mock.method(passwordServices(fresh.gw).hasher, 'verify');
        assert.equal((await fresh.http().post('/v1/login').send({ username: 'first-unknown', password: 'whatever-it-is-1' })).status, 401);
        assert.equal(freshHash.mock.callCount(), 0, 'the first unknown-user login does no extra hashing');
        assert.equal(freshVerify.mock.callCount(), 1);
      } finally {
        await fresh.close();
      }
    });

    it('audits failures without the password, and never logs it', async () => {
      await createUser(tg.gw, { username: 'dave', password: PASSWORD }, { actor: 'cli' });
      await login('dave', 'Secret-Guess-4711');
      await login('ghost-user', 'Secret-Guess-4712');
      const failed = await auditOf('login.failed');
      const text = JSON.stringify(failed);
      assert.doesNotMatch(text, /Secret-Guess/);
      assert.doesNotMatch(text, /orchid-lantern/);
      assert.ok(failed.some((r) => JSON.parse(r.data).username === 'dave'));
      // An unknown name is recorded as a keyed hash, not as typed (it may be a password typed into the wrong box).
      assert.ok(failed.some((r) => r.subject === null && typeof JSON.parse(r.data).login_key === 'string'));
      assert.doesNotMatch(text, /ghost-user/);
      assert.doesNotMatch(tg.logs.text, /Secret-Guess|orchid-lantern/);
      assert.match(await tg.gw.metrics.registry.getSingleMetricAsString('stepgate_login_total'), /outcome="invalid_credentials"}/);
    });

    it('rejects malformed bodies with 400 and a pointer, charging nothing', async () => {
      const cases: [unknown, string][] = [
        [{ username: 'erin' }, '/password'],
        [{ username: 'erin', password: 12345678 }, '/password'],
        [{ username: ['erin'], password: PASSWORD }, '/username'],
        [{ username: 'erin', password: PASSWORD, remember: true }, '/remember'],
        [{ username: 'erin', password: 'x'.repeat(1025) }, '/password'],
      ];
      for (const [body, pointer] of cases) {
        const res = await tg.http().post('/v1/login').send(body as object);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(res.body.code, 'validation_failed');
        assert.ok((res.body.invalid_params as { pointer: string }[]).some((p) => p.pointer === pointer), `${pointer} in ${res.text}`);
      }
      const form = await tg.http().post('/v1/login').type('form').send({ username: 'erin', password: PASSWORD });
      assert.equal(form.status, 415);
      const broken = await tg.http().post('/v1/login').set('Content-Type', 'application/json').send('{"username": "erin",');
      assert.equal(broken.status, 400);
      assert.equal(await throttleRow('erin'), undefined);
    });

    it('treats a disabled user like a wrong password, even with the right one', async () => {
      const frank = await createUser(tg.gw, { username: 'frank', password: PASSWORD }, { actor: 'cli' });
      await setUserStatus(tg.gw, frank.id, 'disabled', { actor: 'cli' }, 'left the company');
      const right = await login('frank', PASSWORD);
      const unknown = await login('frank-unknown', PASSWORD);
      assert.equal(right.status, 401);
      assert.deepEqual(problemWithoutRequestId(right), problemWithoutRequestId(unknown));
      assert.equal(cookieHeader(right).some((c) => c.startsWith('stepgate_session=')), false);
    });

    it('rehashes on a successful login when the argon2 parameters changed', async () => {
      const grace = await createUser(tg.gw, { username: 'grace', password: PASSWORD }, { actor: 'cli' });
      const old = await new PasswordHasher({ memoryKiB: 19456, iterations: 3, parallelism: 1 }).hash(normalisePassword(PASSWORD));
      await tg.gw.store.db.updateTable('factors').set({ secret_hash: old }).where('user_id', '=', grace.id).execute();

      assert.equal((await login('grace', 'wrong-password-77')).status, 401);
      const unchanged = await tg.gw.store.db.selectFrom('factors').select('secret_hash').where('user_id', '=', grace.id).executeTakeFirstOrThrow();
      assert.equal(unchanged.secret_hash, old, 'no rehash on failure');

      assert.equal((await login('grace', PASSWORD)).status, 200);
      const row = await tg.gw.store.db.selectFrom('factors').select('secret_hash').where('user_id', '=', grace.id).executeTakeFirstOrThrow();
      assert.notEqual(row.secret_hash, old);
      assert.match(row.secret_hash ?? '', /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
      assert.equal((await login('grace', PASSWORD)).status, 200, 'the new hash verifies');
      const succeeded = await auditOf('login.succeeded');
      assert.ok(succeeded.some((r) => r.subject === grace.id && JSON.parse(r.data).rehashed === true));
    });

    it('keeps the audit chain intact through logins', async () => {
      const { verifyAuditChain } = await import('../../src/audit/audit-log.ts');
      const result = await verifyAuditChain(tg.gw.store.db);
      assert.equal(result.ok, true);
    });

    it('computes the exponential failure delay from config', () => {
      const gw = { ...tg.gw, config: { ...tg.config, login: { ...tg.config.login, delayAfterFailures: 3, delayBaseSeconds: 1, delayMaxSeconds: 8 } } };
      assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map((f) => failureDelaySeconds(gw, f)), [0, 0, 0, 1, 2, 4, 8, 8]);
    });
  });
}

describe('password login failure delay (sqlite)', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await createTestGateway({ config: { login: { maxFailures: 5, lockSeconds: 60, delayAfterFailures: 1, delayBaseSeconds: 0.3, delayMaxSeconds: 1 } } });
    await createUser(tg.gw, { username: 'henry', password: PASSWORD }, { actor: 'cli' });
  });
  after(async () => {
    await tg.close();
  });

  it('delays the answer after the configured number of failures (lower bound only)', async () => {
    const first = await tg.http().post('/v1/login').send({ username: 'henry', password: 'wrong-password-1' });
    assert.equal(first.status, 401);
    const started = performance.now();
    const second = await tg.http().post('/v1/login').send({ username: 'henry', password: 'wrong-password-2' });
    assert.equal(second.status, 401);
    assert.ok(performance.now() - started >= 290, 'second failure answered after the delay');
  });
});
