import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { newId } from '../../src/crypto/ids.ts';
import { type Factor, factorRegistry, type FactorRegistry } from '../../src/factors/factor.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * Velocity limits hold at completion, not only at creation: several step-ups created at
 * once all see "under the limit", but only as many complete with the cheap factor as the
 * limit allows; the others must prove the stronger one. (A test-only direct factor stands
 * in for the stronger factor under the `hardware_otp` id.)
 */

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '10.00', currency: 'CNY' };

const strongFactor: Factor<{ code: string }> = {
  type: 'hardware_otp',
  descriptor: { kind: 'direct', amr: ['hwk', 'otp'], possession: true, multiple: false },
  async verify(record, input) {
    return record?.params.code === (input as { code?: unknown }).code ? { ok: true, amr: ['hwk', 'otp'] } : { ok: false, reason: 'invalid' };
  },
};

for (const dialect of testDialects()) {
  describe(`velocity re-checked at completion (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { stepup: { pollIntervalSeconds: 1 } } });
      // The stand-in replaces the real hardware_otp module (its verification is not what this test is about).
      (tg.gw as { factors: FactorRegistry }).factors = factorRegistry(...[...tg.gw.factors.values()].filter((f) => f.type !== 'hardware_otp'), strongFactor as Factor);
      await setPolicies(tg.gw, [
        { id: 'daily-two', action: ACTION, priority: 10, when: { velocity: { windowSeconds: 86400, maxCount: 2 } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
        { id: 'beyond', action: ACTION, priority: 20, require: { anyOf: [['hardware_otp']] }, acr: 'urn:stepgate:aal2' },
      ]);
      pay = await makeClient(tg.gw, 'pay', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    async function userWithToken(name: string) {
      const u = await makeUser(tg.gw, name);
      const now = tg.clock.now().getTime();
      await tg.gw.store.db.insertInto('factors').values({ id: newId('fac'), user_id: u.id, type: 'hardware_otp', label: 'fob', status: 'active', secret_hash: null, secret_sealed: null, params: JSON.stringify({ code: '424242' }), counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null }).execute();
      return u;
    }
    async function create(subject: string) {
      const res = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject, action: ACTION, context: CONTEXT });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body as { stepup_id: string; ticket: string; options: string[][] };
    }
    const verify = (s: { stepup_id: string; ticket: string }, body: Record<string, unknown>) =>
      tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send(body);

    it('three created under the limit: two complete with the password, the third must prove the token', async () => {
      await userWithToken('vera');
      const all = [await create('vera'), await create('vera'), await create('vera')];
      for (const s of all) assert.deepEqual(s.options, [['password']]);
      const first = await verify(all[0]!, { factor: 'password', password: PASSWORD });
      assert.equal(first.body.completed, true);
      const second = await verify(all[1]!, { factor: 'password', password: PASSWORD });
      assert.equal(second.body.completed, true);
      const third = await verify(all[2]!, { factor: 'password', password: PASSWORD });
      assert.equal(third.status, 200);
      assert.equal(third.body.completed, false);
      assert.deepEqual(third.body.remaining, [['hardware_otp']]);
      const status = await tg.http().get(`/v1/stepup/${all[2]!.stepup_id}`).set('Authorization', `Ticket ${all[2]!.ticket}`);
      assert.equal(status.body.status, 'pending');
      assert.deepEqual(status.body.options, [['hardware_otp']]);
      const done = await verify(all[2]!, { factor: 'hardware_otp', code: '424242' });
      assert.equal(done.body.completed, true, JSON.stringify(done.body));
      tg.clock.advance(2);
      const tok = await tg.http().post(`/v1/stepup/${all[2]!.stepup_id}/token`).set('Authorization', pay.basic).send();
      assert.equal(tok.status, 200);
      const claims = JSON.parse(Buffer.from(tok.body.step_up_token.split('.')[1], 'base64url').toString());
      assert.equal(claims.acr, 'urn:stepgate:aal2');
      assert.deepEqual(claims.amr.sort(), ['hwk', 'mfa', 'otp', 'pwd']);
      const raised = await tg.gw.store.db.selectFrom('audit_log').select('type').where('type', '=', 'stepup.requirement_raised').execute();
      assert.equal(raised.length, 1);
    });

    it('eight completed in parallel under a limit of two: exactly two complete with the password', async () => {
      await userWithToken('walt');
      const all = await Promise.all(Array.from({ length: 8 }, () => create('walt')));
      const results = await Promise.all(all.map((s) => verify(s, { factor: 'password', password: PASSWORD })));
      assert.ok(results.every((r) => r.status === 200), results.map((r) => r.status).join(','));
      assert.equal(results.filter((r) => r.body.completed === true).length, 2);
      assert.equal(results.filter((r) => r.body.completed === false).length, 6);
    });

    it('a completed step-up for a negative amount never gives back room under a daily amount limit', async () => {
      const limited = 'payment_code.amount_limited';
      await setPolicies(tg.gw, [
        { id: 'daily-two', action: ACTION, priority: 10, when: { velocity: { windowSeconds: 86400, maxCount: 2 } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
        { id: 'beyond', action: ACTION, priority: 20, require: { anyOf: [['hardware_otp']] }, acr: 'urn:stepgate:aal2' },
        { id: 'daily-10k', action: limited, priority: 10, when: { velocity: { windowSeconds: 86400, maxAmount: '10000.00', currency: 'CNY' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' },
        { id: 'over-10k', action: limited, priority: 20, require: { anyOf: [['hardware_otp']] }, acr: 'urn:stepgate:aal2' },
      ]);
      const client = await makeClient(tg.gw, 'pay-limited', [limited]);
      await userWithToken('nora');
      const start = (amount: string) =>
        tg.http().post('/v1/stepup').set('Authorization', client.basic).send({ subject: 'nora', action: limited, context: { amount, currency: 'CNY' } });
      // 5000 of the 10000 with the password, written as a negative amount.
      const credit = await start('-5000.00');
      assert.equal(credit.status, 201, JSON.stringify(credit.body));
      assert.deepEqual(credit.body.options, [['password']]);
      assert.equal((await verify(credit.body, { factor: 'password', password: PASSWORD })).body.completed, true);
      // 5000 + 9000 > 10000: the fob, not the password (a signed sum would say -5000 + 9000 = 4000).
      const next = await start('9000.00');
      assert.equal(next.status, 201, JSON.stringify(next.body));
      assert.deepEqual(next.body.options, [['hardware_otp']]);
      // Alone, a negative amount beyond the limit is beyond it too.
      const big = await start('-20000.00');
      assert.deepEqual(big.body.options, [['hardware_otp']]);
    });
  });
}
