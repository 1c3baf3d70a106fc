import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { newId } from '../../src/crypto/ids.ts';
import { type Factor, factorRegistry, type FactorRegistry } from '../../src/factors/factor.ts';
import { savePolicySet } from '../../src/flows/policies.ts';
import type { PolicyInput } from '../../src/policy/policy-schema.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * A step-up completes under the policy set in force at completion, not the one it was created
 * under: an administrator who removes the lenient policy of an action (or every policy of it,
 * to stop it at once) must not see step-ups already under way complete with the weaker factor
 * for the rest of their lifetime. (No velocity conditions here: those were re-checked already.
 * A test-only direct factor stands in for the stronger factor under the `hardware_otp` id.)
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

const LENIENT: PolicyInput = { id: 'lenient', action: ACTION, priority: 10, when: { amount: { lte: '1000.00', currency: 'CNY' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' };
const STRICT: PolicyInput = { id: 'strict', action: ACTION, priority: 20, require: { anyOf: [['hardware_otp']] }, acr: 'urn:stepgate:aal2' };
const OTHER: PolicyInput = { id: 'other', action: 'account.close', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' };

for (const dialect of testDialects()) {
  describe(`policy changes while step-ups are under way (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { stepup: { pollIntervalSeconds: 1 } } });
      (tg.gw as { factors: FactorRegistry }).factors = factorRegistry(...[...tg.gw.factors.values()].filter((f) => f.type !== 'hardware_otp'), strongFactor as Factor);
      pay = await makeClient(tg.gw, 'pay', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    const save = (policies: PolicyInput[], comment: string) => savePolicySet(tg.gw, policies, { who: { actor: 'test-admin' }, comment });
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
    const poll = (s: { stepup_id: string }) => tg.http().post(`/v1/stepup/${s.stepup_id}/token`).set('Authorization', pay.basic).send();

    it('the lenient policy removed after creation: the password no longer completes it, the fob does', async () => {
      await save([LENIENT, STRICT], 'lenient and strict');
      await userWithToken('uma');
      const s = await create('uma');
      assert.deepEqual(s.options, [['password']]);
      await save([STRICT], 'incident: small payments need the fob too');

      const pwd = await verify(s, { factor: 'password', password: PASSWORD });
      assert.equal(pwd.status, 200, JSON.stringify(pwd.body));
      assert.equal(pwd.body.completed, false);
      assert.deepEqual(pwd.body.remaining, [['hardware_otp']]);
      const pending = await poll(s);
      assert.equal(pending.body.code, 'authorization_pending');

      const fob = await verify(s, { factor: 'hardware_otp', code: '424242' });
      assert.equal(fob.body.completed, true, JSON.stringify(fob.body));
      tg.clock.advance(2);
      const tok = await poll(s);
      assert.equal(tok.status, 200, JSON.stringify(tok.body));
      const claims = JSON.parse(Buffer.from(tok.body.step_up_token.split('.')[1], 'base64url').toString());
      assert.equal(claims.acr, 'urn:stepgate:aal2');
      const raised = await tg.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.requirement_raised').execute();
      assert.ok(raised.some((r) => r.data.includes(s.stepup_id) && r.data.includes('"policy_changed"')), JSON.stringify(raised));
    });

    it('every policy of the action removed after creation: the step-up is denied, no token', async () => {
      await save([LENIENT, STRICT], 'lenient and strict again');
      await userWithToken('vic');
      const s = await create('vic');
      await save([OTHER], 'stop payment codes now');

      const pwd = await verify(s, { factor: 'password', password: PASSWORD });
      assert.equal(pwd.status, 403, JSON.stringify(pwd.body));
      assert.equal(pwd.body.code, 'access_denied');
      tg.clock.advance(2);
      const tok = await poll(s);
      assert.equal(tok.status, 403, JSON.stringify(tok.body));
      assert.equal(tok.body.code, 'access_denied');
    });

    it('a change to another action leaves step-ups under way as they were', async () => {
      await save([LENIENT, STRICT], 'lenient and strict, third time');
      await userWithToken('wes');
      const s = await create('wes');
      await save([LENIENT, STRICT, OTHER], 'account closing needs a password');
      const pwd = await verify(s, { factor: 'password', password: PASSWORD });
      assert.equal(pwd.body.completed, true, JSON.stringify(pwd.body));
    });
  });
}
