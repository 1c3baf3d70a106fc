import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { listen, makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

// Amounts in a step-up binding are spelt exactly in their ISO 4217 currency's minor units
// (src/verifier/money.ts): refused otherwise, never rewritten, and compared byte for byte.
const ACTION = 'payment_code.issue';

const policies = [
  // Yen: thresholds and the velocity limit in whole yen.
  { id: 'jpy-small', action: ACTION, priority: 10, when: { amount: { lte: '10000', currency: 'JPY' }, velocity: { windowSeconds: 3600, maxAmount: '10000' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' as const },
  { id: 'pwd-any', action: ACTION, priority: 20, when: { fields: { currency: { in: ['CNY', 'BHD', 'CLF', 'USD'] } } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' as const },
  { id: 'strict', action: ACTION, priority: 30, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2' as const },
];

for (const dialect of testDialects()) {
  describe(`step-up money binding (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let userId: string;

    before(async () => {
      tg = await createTestGateway({ dialect, config: { stepup: { pollIntervalSeconds: 2 } } });
      await setPolicies(tg.gw, policies);
      userId = (await makeUser(tg.gw, 'alice')).id;
      pay = await makeClient(tg.gw, 'payment-code service', [ACTION]);
    });
    after(async () => {
      await tg.close();
    });

    const create = (context: Record<string, unknown>) =>
      tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'alice', action: ACTION, context: { payee: 'shop-42', deviceId: 'dev-1', ...context }, binding_message: 'Pay' });
    const count = async (table: 'stepups' | 'audit_log') => Number((await tg.gw.store.db.selectFrom(table).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

    async function complete(context: Record<string, unknown>): Promise<string> {
      const created = await create(context);
      assert.equal(created.status, 201, created.text);
      const { stepup_id: id, ticket } = created.body;
      await tg.http().post(`/v1/stepup/${id}/verify`).set('Authorization', `Ticket ${ticket}`).send({ factor: 'password', password: PASSWORD }).expect(200);
      tg.clock.advance(3);
      const got = await tg.http().post(`/v1/stepup/${id}/token`).set('Authorization', pay.basic).send();
      assert.equal(got.status, 200, got.text);
      return got.body.step_up_token as string;
    }

    it('refuses an amount finer than its currency, a non-canonical spelling and an unusable currency: 400, the code, the pointer, nothing written', async () => {
      const before = { stepups: await count('stepups'), audit: await count('audit_log') };
      const cases: [Record<string, unknown>, string, string][] = [
        [{ amount: '10.001', currency: 'CNY' }, 'amount_precision_exceeded', '/context/amount'],
        [{ amount: '100.5', currency: 'JPY' }, 'amount_precision_exceeded', '/context/amount'],
        [{ amount: '1.0', currency: 'JPY' }, 'amount_precision_exceeded', '/context/amount'],
        [{ amount: '1.5000', currency: 'BHD' }, 'amount_precision_exceeded', '/context/amount'],
        [{ amount: '10.0000001', currency: 'CNY' }, 'amount_precision_exceeded', '/context/amount'],
        [{ amount: '10.1', currency: 'CNY' }, 'amount_not_canonical', '/context/amount'],
        [{ amount: '10', currency: 'CNY' }, 'amount_not_canonical', '/context/amount'],
        [{ amount: '0120.00', currency: 'CNY' }, 'amount_not_canonical', '/context/amount'],
        [{ amount: '-0.00', currency: 'CNY' }, 'amount_not_canonical', '/context/amount'],
        [{ amount: '1.5', currency: 'KWD' }, 'amount_not_canonical', '/context/amount'],
        [{ amount: '10.00', currency: 'ZZZ' }, 'currency_unsupported', '/context/currency'],
        [{ amount: '1', currency: 'XAU' }, 'currency_unsupported', '/context/currency'],
        [{ amount: '1', currency: 'XXX' }, 'currency_unsupported', '/context/currency'],
        [{ currency: 'ZZZ' }, 'currency_unsupported', '/context/currency'],
      ];
      for (const [context, code, pointer] of cases) {
        const res = await create(context);
        assert.equal(res.status, 400, `${JSON.stringify(context)}: ${res.text}`);
        assert.match(res.headers['content-type'] ?? '', /^application\/problem\+json/);
        assert.equal(res.body.code, code, JSON.stringify(context));
        assert.deepEqual(res.body.invalid_params.map((p: { pointer: string }) => p.pointer), [pointer], JSON.stringify(context));
      }
      // Shape errors stay validation_failed (lower case, no currency at all, an exponent).
      for (const context of [{ amount: '10.00', currency: 'cny' }, { amount: '10.00' }, { amount: '1e3', currency: 'JPY' }]) {
        const res = await create(context);
        assert.equal(res.status, 400, res.text);
        assert.equal(res.body.code, 'validation_failed', JSON.stringify(context));
      }
      assert.deepEqual({ stepups: await count('stepups'), audit: await count('audit_log') }, before);
    });

    it('binds the canonical spelling of each exponent verbatim: the token carries the bytes that were sent', async () => {
      const server = await listen(tg.app);
      try {
        const jwks = createJwksCache({ jwksUri: `${server.url}/.well-known/jwks.json`, clock: tg.clock });
        for (const money of [{ amount: '10.10', currency: 'CNY' }, { amount: '1.500', currency: 'BHD' }, { amount: '0.0001', currency: 'CLF' }, { amount: '0.00', currency: 'USD' }]) {
          const context = { payee: 'shop-42', deviceId: 'dev-1', ...money };
          const token = await complete(money);
          const base = { issuer: tg.config.http.publicUrl, audience: pay.clientId, jwks, clock: tg.clock, expectedAction: ACTION, expectedSubject: userId };
          // The same amount spelt another way is another binding, in both directions: refused.
          const other = money.currency === 'CNY' ? '10.1' : money.currency === 'BHD' ? '1.5' : money.currency === 'CLF' ? '0.000100' : '0';
          await assert.rejects(verifyStepUpToken(token, { ...base, replayStore: new MemoryReplayStore(), expectedContext: { ...context, amount: other } }), (e: { code?: string; field?: string }) => e.code === 'context_mismatch' && e.field === 'amount');
          const claims = await verifyStepUpToken(token, { ...base, replayStore: new MemoryReplayStore(), expectedContext: context });
          assert.deepEqual(claims.authorization_details, [{ type: ACTION, ...context }]);
        }
      } finally {
        await server.close();
      }
      const row = await tg.gw.store.db.selectFrom('stepups').select(['amount', 'currency']).where('currency', '=', 'BHD').executeTakeFirstOrThrow();
      assert.deepEqual({ ...row }, { amount: '1.500', currency: 'BHD' });
    });

    it('yen thresholds and the yen velocity limit are compared in whole yen', async () => {
      await complete({ amount: '6000', currency: 'JPY' });
      // 6000 + 4000 = 10000 ≤ 10000: still the password policy.
      await complete({ amount: '4000', currency: 'JPY' });
      // 10000 + 1 > 10000: falls through to the strict policy, which alice cannot satisfy.
      const over = await create({ amount: '1', currency: 'JPY' });
      assert.equal(over.status, 409, over.text);
      assert.equal(over.body.code, 'enrollment_required');
      // Above the threshold itself: the strict policy too.
      const large = await create({ amount: '10001', currency: 'JPY' });
      assert.equal(large.status, 409, large.text);
    });
  });
}
