import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { type GatewayProcess, startGatewayProcess } from '../helpers/processes.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * A daily velocity limit holds across two `stepgate serve` OS processes on one database:
 * step-ups created under the limit and completed at the same moment on both processes
 * complete only as far as the limit allows; the others are denied (no policy allows the
 * action beyond it), and a denied one uses up none of the budget.
 */

const ACTION = 'payment_code.issue';

for (const dialect of testDialects()) {
  describe(`velocity across two gateway processes on one ${dialect} database`, () => {
    let setup: TestGateway;
    let a: GatewayProcess;
    let b: GatewayProcess;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      setup = await createTestGateway({ dialect, clock: { now: () => new Date() } });
      // 500.00 CNY a day with the password; nothing beyond it.
      await setPolicies(setup.gw, [
        { id: 'daily-500', action: ACTION, priority: 10, when: { velocity: { windowSeconds: 86400, maxCount: 10, maxAmount: '500.00', currency: 'CNY' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
      ]);
      await makeUser(setup.gw, 'olga');
      pay = await makeClient(setup.gw, 'pay', [ACTION]);
      [a, b] = await Promise.all([
        startGatewayProcess(setup.database, { masterKey: TEST_MASTER_KEY }),
        startGatewayProcess(setup.database, { masterKey: TEST_MASTER_KEY }),
      ]);
    });
    after(async () => {
      await Promise.all([a?.stop(), b?.stop()]);
      await setup.close();
    });

    const post = async (url: string, authorization: string, body: unknown) => {
      const res = await fetch(url, { method: 'POST', headers: { authorization, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };

    it('six step-ups of 200.00 completed at once on both processes: two complete, the others are denied and use none of the budget', async () => {
      const created = await Promise.all(
        Array.from({ length: 6 }, (_, i) => post(`${(i % 2 === 0 ? a : b).url}/v1/stepup`, pay.basic, { subject: 'olga', action: ACTION, context: { amount: '200.00', currency: 'CNY' } })),
      );
      for (const c of created) {
        assert.equal(c.status, 201, JSON.stringify(c.body));
        assert.deepEqual(c.body.options, [['password']]);
      }
      const verified = await Promise.all(
        created.map((c, i) => post(`${(i % 2 === 0 ? b : a).url}/v1/stepup/${c.body.stepup_id as string}/verify`, `Ticket ${c.body.ticket as string}`, { factor: 'password', password: PASSWORD })),
      );
      const completed = verified.filter((v) => v.status === 200 && v.body.completed === true);
      const shown = verified.map((v) => `${v.status}:${String(v.body.code ?? v.body.completed)}`).join(',');
      assert.equal(completed.length, 2, shown);
      // The rest are denied: beyond the limit no policy allows the action. (A burst of correct
      // passwords can also meet the password's lockout, which charges each attempt in advance.)
      assert.ok(verified.every((v) => (v.status === 200 && v.body.completed === true) || (v.status === 403 && v.body.code === 'access_denied') || (v.status === 423 && v.body.code === 'factor_locked')), shown);

      const rows = await setup.gw.store.db.selectFrom('stepups').select(['status']).where('action', '=', ACTION).execute();
      assert.equal(rows.filter((r) => r.status === 'completed').length, 2);
      assert.equal(rows.filter((r) => r.status === 'completed' || r.status === 'token_issued').length, 2);

      // 400.00 spent: 100.00 still fits (the denied ones were not charged), 100.01 does not.
      const fits = await post(`${a.url}/v1/stepup`, pay.basic, { subject: 'olga', action: ACTION, context: { amount: '100.00', currency: 'CNY' } });
      assert.equal(fits.status, 201, JSON.stringify(fits.body));
      const over = await post(`${b.url}/v1/stepup`, pay.basic, { subject: 'olga', action: ACTION, context: { amount: '100.01', currency: 'CNY' } });
      assert.equal(over.status, 403, JSON.stringify(over.body));
      assert.equal(over.body.code, 'access_denied');
    });
  });
}
