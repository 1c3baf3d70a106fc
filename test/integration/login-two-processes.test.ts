import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loginThrottleKey, normaliseUsername } from '../../src/flows/users.ts';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { type GatewayProcess, startGatewayProcess } from '../helpers/processes.ts';
import { makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * Two `stepgate serve` OS processes on one database share the login lockout: parallel wrong
 * passwords split across both are each charged exactly once, and the lock, once reached,
 * holds on both (even for the right password). The in-process variant is in
 * login-lockout.test.ts; this one has what production has: separate processes, pools and
 * event loops, and the same schema named by STEPGATE_DATABASE_SCHEMA.
 */

const MAX = 6;
const ATTEMPTS = 3 * MAX;

for (const dialect of testDialects()) {
  describe(`login lockout across two gateway processes (${dialect})`, () => {
    let setup: TestGateway;
    let a: GatewayProcess;
    let b: GatewayProcess;

    before(async () => {
      setup = await createTestGateway({ dialect, clock: { now: () => new Date() } });
      await makeUser(setup.gw, 'lena');
      const configFile = join(setup.database.dataDir, 'lockout.yaml');
      // No exponential delay and no per-address budget: the test is about the account lockout.
      writeFileSync(configFile, `login:\n  maxFailures: ${MAX}\n  lockSeconds: 600\n  delayAfterFailures: 1000\n  delayBaseSeconds: 0\nrateLimits:\n  enabled: false\n`);
      const options = { masterKey: TEST_MASTER_KEY, args: ['--config', configFile] };
      [a, b] = await Promise.all([startGatewayProcess(setup.database, options), startGatewayProcess(setup.database, options)]);
    });
    after(async () => {
      await Promise.all([a?.stop(), b?.stop()]);
      await setup.close();
    });

    const login = (on: GatewayProcess, password: string) =>
      fetch(`${on.url}/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'lena', password }) }).then(async (r) => ({ status: r.status, body: (await r.json()) as { code?: string } }));

    const throttle = () => setup.gw.store.db.selectFrom('login_throttle').selectAll().where('key', '=', loginThrottleKey(setup.gw, normaliseUsername('lena'))).executeTakeFirstOrThrow();

    it(`N parallel wrong passwords split across both are exactly N charges; past ${MAX} the lock holds on both`, async () => {
      assert.notEqual(a.port, b.port);
      // Below the limit: N = MAX - 1 parallel failures, every one counted once.
      const n = MAX - 1;
      const first = await Promise.all(Array.from({ length: n }, (_, i) => login(i % 2 === 0 ? a : b, `wrong password ${i}`)));
      assert.deepEqual(first.map((r) => r.status), Array(n).fill(401));
      let row = await throttle();
      assert.equal(Number(row.failures), n, 'N charged, none lost between the processes');
      assert.equal(row.locked_until, null, 'not locked yet');

      // Past it: of many more in parallel exactly one more is charged (and locks); the rest are refused uncompared.
      const results = await Promise.all(Array.from({ length: ATTEMPTS }, (_, i) => login(i % 2 === 0 ? b : a, `wrong again ${i}`)));
      const charged = results.filter((r) => r.status === 401);
      const refused = results.filter((r) => r.status === 429);
      assert.equal(charged.length, 1, results.map((r) => r.status).join(','));
      assert.equal(refused.length, ATTEMPTS - 1);
      assert.ok(charged.every((r) => r.body.code === 'invalid_credentials'));
      assert.ok(refused.every((r) => r.body.code === 'too_many_requests'));
      row = await throttle();
      assert.equal(Number(row.failures), MAX, 'exactly the limit charged');
      assert.ok(row.locked_until !== null && Number(row.locked_until) > Date.now(), 'locked');

      // The lock holds on both processes, for the right password too.
      for (const on of [a, b]) {
        const right = await login(on, PASSWORD);
        assert.equal(right.status, 429, `${on.url}: ${JSON.stringify(right.body)}`);
      }
      const failed = await setup.gw.store.db.selectFrom('audit_log').select('type').where('type', 'in', ['login.failed', 'login.locked']).execute();
      assert.equal(failed.filter((e) => e.type === 'login.locked').length, 1, 'locked once');
    });
  });
}
