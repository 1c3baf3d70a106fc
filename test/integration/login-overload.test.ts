import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { after, before, describe, it } from 'node:test';
import type { Response } from 'supertest';
import { argon2SlotsFor } from '../../src/factors/password/index.ts';
import { STEPUP_RESERVED_SLOTS } from '../../src/factors/password/hasher.ts';
import { loginThrottleKey, normaliseUsername } from '../../src/flows/users.ts';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { startGatewayProcess } from '../helpers/processes.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { createTestDatabase, testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

/**
 * The argon2 capacity (`password.maxConcurrentHashes`): a password check that finds every
 * slot busy is refused at once with 503 `overloaded` and Retry-After, before anything is
 * charged or written (no queue); work that needs no argon2 (client-authenticated step-up
 * calls, TOTP) is served meanwhile. Determinism: the "busy" cases hold the slots from the
 * test itself instead of racing real hashes.
 */

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '10.00', currency: 'CNY', payee: 'shop-1', deviceId: 'dev-1' };
// A size no other gateway in this process uses, so the test holds exactly this semaphore.
const CAP = 3;

/** Takes every slot of the semaphore of this size (and `beyond` it: the step-up lane's too). */
async function holdAll(size: number, beyond = 0): Promise<() => void> {
  const slots = argon2SlotsFor(size);
  const releases: (() => void)[] = [];
  for (;;) {
    const r = slots.tryAcquire(beyond);
    if (r === undefined) break;
    releases.push(r);
  }
  assert.equal(releases.length, size + beyond, 'the test holds every slot');
  return () => {
    for (const r of releases) r();
  };
}

async function throttle(tg: TestGateway, username: string) {
  return tg.gw.store.db.selectFrom('login_throttle').selectAll().where('key', '=', loginThrottleKey(tg.gw, normaliseUsername(username))).executeTakeFirst();
}

function assertOverloaded(res: Response): void {
  assert.equal(res.status, 503, res.text);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  assert.equal(res.body.code, 'overloaded');
  assert.equal(res.headers['retry-after'], '1');
}

for (const dialect of testDialects()) {
  describe(`argon2 capacity (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let userId: string;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { password: { maxConcurrentHashes: CAP, argon2: { memoryKiB: 19456, iterations: 6, parallelism: 1 } }, login: { maxFailures: 1000, delayBaseSeconds: 0 }, stepup: { pollIntervalSeconds: 1 } } });
      await setPolicies(tg.gw, [
        { id: 'pwd', action: ACTION, priority: 10, when: { amount: { lte: '50.00', currency: 'CNY' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
        { id: 'totp', action: ACTION, priority: 20, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2' },
      ]);
      userId = (await makeUser(tg.gw, 'olga')).id;
      pay = await makeClient(tg.gw, 'payment-code service', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    const db = () => tg.gw.store.db;
    const auditCount = async () => Number((await db().selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    const throttle = (username: string) => db().selectFrom('login_throttle').selectAll().where('key', '=', loginThrottleKey(tg.gw, normaliseUsername(username))).executeTakeFirst();
    const login = (username: string, password: string) => tg.http().post('/v1/login').send({ username, password });

    it('refuses a login at once when every slot is busy, and writes nothing (known and unknown user alike)', async () => {
      const release = await holdAll(CAP);
      try {
        const before = await auditCount();
        for (const [username, password] of [['olga', PASSWORD], ['olga', 'a wrong password'], ['nobody-here', 'whatever it is']] as const) {
          assertOverloaded(await login(username, password));
          assert.equal(await throttle(username), undefined, `${username}: no attempt charged`);
        }
        assert.equal(await auditCount(), before, 'no audit row, no partial write');
        const sessions = await db().selectFrom('sessions').selectAll().where('user_id', '=', userId).execute();
        assert.equal(sessions.length, 0);
      } finally {
        release();
      }
      const ok = await login('olga', PASSWORD);
      assert.equal(ok.status, 200, ok.text);
      assert.equal(argon2SlotsFor(CAP).active, 0, 'every slot is back');
    });

    it('a step-up password check takes its reserved slot while sign-ins hold every regular one (not starved)', async () => {
      const created = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'olga', action: ACTION, context: CONTEXT });
      assert.equal(created.status, 201, created.text);
      const { stepup_id: id, ticket } = created.body as { stepup_id: string; ticket: string };
      const release = await holdAll(CAP);
      try {
        assertOverloaded(await login('olga', PASSWORD));
        const done = await tg.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send({ factor: 'password', password: PASSWORD });
        assert.equal(done.status, 200, done.text);
        assert.equal(done.body.completed, true);
      } finally {
        release();
      }
    });

    it('beyond the reserved slot a step-up password verification is refused without charging the step-up or the factor', async () => {
      const created = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'olga', action: ACTION, context: CONTEXT });
      assert.equal(created.status, 201, created.text);
      const { stepup_id: id, ticket } = created.body as { stepup_id: string; ticket: string };
      const verify = () => tg.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send({ factor: 'password', password: PASSWORD });
      const release = await holdAll(CAP, STEPUP_RESERVED_SLOTS);
      try {
        const before = await auditCount();
        assertOverloaded(await verify());
        const row = await db().selectFrom('stepups').select(['attempts', 'status']).where('id', '=', id).executeTakeFirstOrThrow();
        assert.deepEqual({ attempts: Number(row.attempts), status: row.status }, { attempts: 0, status: 'pending' });
        const factor = await db().selectFrom('factors').select('failures').where('user_id', '=', userId).where('type', '=', 'password').executeTakeFirstOrThrow();
        assert.equal(Number(factor.failures), 0);
        assert.equal(await auditCount(), before);
      } finally {
        release();
      }
      const done = await verify();
      assert.equal(done.status, 200, done.text);
      assert.equal(done.body.completed, true);
    });

    it('the pages say so too: the login page and the step-up page answer 503 with a page that asks to retry, not a JSON error', async () => {
      const agent = tg.agent();
      const loginPage = await agent.get('/login').set('Accept-Language', 'en');
      const csrf = /name="_login_csrf" value="([^"]+)"/.exec(loginPage.text)?.[1] ?? '';
      const created = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'olga', action: ACTION, context: CONTEXT });
      const { stepup_id: id, ticket } = created.body as { stepup_id: string; ticket: string };
      await agent.get(`/stepup/${id}?ticket=${ticket}`);
      const stepupPage = await agent.get(`/stepup/${id}`).set('Accept-Language', 'en');
      const stepupCsrf = /name="_stepup_csrf" value="([^"]+)"/.exec(stepupPage.text)?.[1] ?? '';
      const release = await holdAll(CAP, STEPUP_RESERVED_SLOTS);
      try {
        const busy = await agent.post('/login').type('form').set('Accept-Language', 'en').send({ _login_csrf: csrf, username: 'olga', password: PASSWORD });
        assert.equal(busy.status, 503);
        assert.match(String(busy.headers['content-type']), /^text\/html/);
        assert.equal(busy.headers['retry-after'], '1');
        assert.match(busy.text, /Too many sign-ins are being checked right now/);
        const stepupBusy = await agent.post(`/stepup/${id}/verify`).type('form').set('Accept-Language', 'zh-CN').send({ _stepup_csrf: stepupCsrf, factor: 'password', password: PASSWORD });
        assert.equal(stepupBusy.status, 503);
        assert.match(String(stepupBusy.headers['content-type']), /^text\/html/);
        assert.match(stepupBusy.text, /当前正在校验的密码过多/);
      } finally {
        release();
      }
      const row = await db().selectFrom('stepups').select(['attempts', 'status']).where('id', '=', id).executeTakeFirstOrThrow();
      assert.deepEqual({ attempts: Number(row.attempts), status: row.status }, { attempts: 0, status: 'pending' }, 'nothing was charged');
    });

    it('serves a TOTP step-up and its token while every argon2 slot is busy (not starved)', async () => {
      const totpUser = await makeUser(tg.gw, 'tomas');
      const { secret } = await insertActiveTotp(tg.gw, totpUser.id);
      const release = await holdAll(CAP);
      try {
        const created = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'tomas', action: ACTION, context: { ...CONTEXT, amount: '500.00' } });
        assert.equal(created.status, 201, created.text);
        const { stepup_id: id, ticket } = created.body as { stepup_id: string; ticket: string };
        const code = oathtoolTotp(secret, DEFAULT_TOTP, Math.floor(tg.clock.now().getTime() / 1000));
        const verified = await tg.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send({ factor: 'totp', code });
        assert.equal(verified.status, 200, verified.text);
        tg.clock.advance(2);
        const token = await tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
        assert.equal(token.status, 200, token.text);
        assert.equal(typeof token.body.step_up_token, 'string');
      } finally {
        release();
      }
    });

    it('a flood beyond capacity gets fast refusals, never a 500, and only admitted attempts leave a trace', async () => {
      const flo = await makeUser(tg.gw, 'flo');
      const n = 12 * CAP;
      const before = await auditCount();
      const results = await Promise.all(Array.from({ length: n }, (_, i) => login('flo', i % 3 === 0 ? PASSWORD : `wrong password ${i}`)));
      for (const r of results) {
        assert.ok([200, 401, 503].includes(r.status), `unexpected ${r.status}: ${r.text}`);
        if (r.status === 503) assertOverloaded(r);
      }
      const statuses = results.map((r) => r.status);
      const refused = statuses.filter((s) => s === 503).length;
      const admitted = n - refused;
      assert.ok(refused > 0, `${n} parallel logins over ${CAP} slots: some must be refused (${statuses.join(',')})`);
      assert.ok(admitted >= 1, 'some are admitted');
      // Every admitted login wrote exactly one login.* event (the lock is out of reach here); refusals none.
      const events = await db().selectFrom('audit_log').select('type').where('subject', '=', flo.id).where('type', 'in', ['login.succeeded', 'login.failed']).execute();
      assert.equal(events.length, admitted, 'one audit row per admitted attempt, none per refusal');
      assert.equal(await auditCount(), before + admitted);
      assert.equal(argon2SlotsFor(CAP).active, 0);
    });
  });
}

for (const dialect of testDialects()) {
  describe(`sign-ins shed beyond capacity, with rate limits on (${dialect})`, () => {
    // Its own semaphore size again, so no other gateway of this process shares the slots.
    const SHED_CAP = 4;
    const LOGIN_BUDGET = 5;
    let tg: TestGateway;

    before(async () => {
      tg = await createTestGateway({
        dialect,
        config: {
          password: { maxConcurrentHashes: SHED_CAP },
          login: { maxFailures: 1000, delayBaseSeconds: 0 },
          rateLimits: { enabled: true, windowSeconds: 3600, perIp: 1000, loginPerIp: LOGIN_BUDGET, stepupUserPerIp: 1000, perClient: 1000 },
        },
      });
      await makeUser(tg.gw, 'sven');
    });
    after(async () => {
      await tg.close();
    });

    const counters = async (bucket: string) => {
      const rows = await tg.gw.store.db.selectFrom('rate_limits').select(['key', 'count']).where('key', 'like', `${bucket}:%`).execute();
      return rows.reduce((n, r) => n + Number(r.count), 0);
    };
    /** Waits until the background charges of shed sign-ins are written (or fails after 5 s). */
    const settled = async (bucket: string, expected: number) => {
      for (let i = 0; i < 100; i += 1) {
        if ((await counters(bucket)) >= expected) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      return counters(bucket);
    };

    it('below capacity a sign-in waits for its counters: charged before the password check', async () => {
      const r = await tg.http().post('/v1/login').send({ username: 'sven', password: PASSWORD });
      assert.equal(r.status, 200, r.text);
      assert.equal(await counters('login_ip'), 1, 'written before the answer, not in the background');
      assert.equal(await counters('ip'), 1);
    });

    it('a sign-in arriving while every slot is busy is refused without waiting for its counters, and is charged all the same, exactly once', async () => {
      const agent = tg.agent();
      const loginPage = await agent.get('/login').set('Accept-Language', 'en');
      const csrf = /name="_login_csrf" value="([^"]+)"/.exec(loginPage.text)?.[1] ?? '';
      const release = await holdAll(SHED_CAP);
      try {
        const audit0 = await tg.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
        const refused = await Promise.all(Array.from({ length: 3 }, (_, i) => tg.http().post('/v1/login').send({ username: 'sven', password: i === 0 ? PASSWORD : 'a wrong password' })));
        for (const r of refused) assertOverloaded(r);
        // The page refuses the same way (its own 503 page), after its CSRF check.
        const page = await agent.post('/login').type('form').set('Accept-Language', 'en').send({ _login_csrf: csrf, username: 'sven', password: PASSWORD });
        assert.equal(page.status, 503);
        assert.match(page.text, /Too many sign-ins are being checked right now/);
        assert.equal(await settled('login_ip', 5), 5, 'each refused sign-in charged the sign-in budget of its address once');
        assert.equal(await counters('ip'), 6, 'and the address budget (the login page GET counts there too)');
        assert.equal(await throttle(tg, 'sven'), undefined, 'no attempt charged to the account');
        const audit1 = await tg.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
        assert.equal(Number(audit1.n), Number(audit0.n), 'no audit row');
        // The budget (5) is now known to be spent: a further shed sign-in is told 429, as the
        // counter would have said, not 503.
        const spent = await tg.http().post('/v1/login').send({ username: 'sven', password: PASSWORD });
        assert.equal(spent.status, 429, spent.text);
        assert.equal(spent.body.code, 'too_many_requests');
        assert.ok(Number(spent.headers['retry-after']) >= 1);
      } finally {
        release();
      }
      assert.equal(await settled('login_ip', 6), 6, 'the 429 was charged too');
      // Slots free again: the spent budget refuses through the counter, before any hash.
      const after = await tg.http().post('/v1/login').send({ username: 'sven', password: PASSWORD });
      assert.equal(after.status, 429, after.text);
      assert.equal(argon2SlotsFor(SHED_CAP).active, 0);
      assert.equal(await counters('login_ip'), 7);
      // Operators see the shed charges: 5 shed sign-ins (4 refused 503, 1 answered 429), two
      // counters each, all written.
      const metrics = await tg.gw.metrics.registry.getSingleMetricAsString('stepgate_rate_limit_shed_charges_total');
      assert.match(metrics, /stepgate_rate_limit_shed_charges_total\{outcome="written"\} 10\b/);
    });
  });
}

describe('argon2 capacity in a stepgate serve process', () => {
  it('sizes the libuv pool for argon2 and answers a login flood with 200/401/503 only', async () => {
    const database = await createTestDatabase('sqlite');
    const gw = await startGatewayProcess(database, { masterKey: TEST_MASTER_KEY, env: { STEPGATE_PASSWORD_MAX_CONCURRENT_HASHES: '1' } });
    try {
      const res = await fetch(`${gw.url}/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'nobody', password: 'not a password' }) });
      assert.equal(res.status, 401);
      const threads = readdirSync(`/proc/${gw.child.pid}/task`).map((t) => readFileSync(`/proc/${gw.child.pid}/task/${t}/comm`, 'utf8').trim());
      assert.equal(threads.filter((t) => t.startsWith('libuv-worker')).length, availableParallelism() + 4, threads.join(','));

      const flood = await Promise.all(
        Array.from({ length: 24 }, () =>
          fetch(`${gw.url}/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'nobody', password: 'not a password' }) }).then(async (r) => ({ status: r.status, retryAfter: r.headers.get('retry-after'), body: (await r.json()) as { code?: string } })),
        ),
      );
      for (const r of flood) assert.ok(r.status === 401 || (r.status === 503 && r.body.code === 'overloaded' && r.retryAfter === '1'), JSON.stringify(r));
      assert.ok(flood.some((r) => r.status === 503), 'one slot, 24 at once: some refused');
      assert.ok(flood.some((r) => r.status === 401), 'some admitted');
    } finally {
      await gw.stop();
      await database.drop();
    }
  });
});
