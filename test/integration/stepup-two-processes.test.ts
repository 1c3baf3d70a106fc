import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createJwksCache, MemoryReplayStore, verifyStepUpToken } from '../../src/verifier/index.ts';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { type GatewayProcess, startGatewayProcess } from '../helpers/processes.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * Two `stepgate serve` OS processes on one database: a step-up created on one completes on
 * the other, the token is handed out once even when both are asked at the same moment, and
 * the verifier accepts it with either process's JWKS.
 */

const ACTION = 'payment_code.issue';
const CONTEXT = { amount: '66.00', currency: 'CNY', payee: 'shop-2', deviceId: 'dev-9' };

for (const dialect of testDialects()) {
  describe(`two gateway processes on one ${dialect} database`, () => {
    let setup: TestGateway;
    let a: GatewayProcess;
    let b: GatewayProcess;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    let userId: string;

    before(async () => {
      setup = await createTestGateway({ dialect, clock: { now: () => new Date() } });
      await setPolicies(setup.gw, [{ id: 'pwd', action: ACTION, priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', tokenTtlSeconds: 120 }]);
      userId = (await makeUser(setup.gw, 'ines')).id;
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

    const json = async (res: Response) => ({ status: res.status, body: (await res.json()) as Record<string, unknown> });

    it('created on A, completed on B, token handed out exactly once across both, verified with the JWKS of either', async () => {
      const created = await json(await fetch(`${a.url}/v1/stepup`, { method: 'POST', headers: { authorization: pay.basic, 'content-type': 'application/json' }, body: JSON.stringify({ subject: 'ines', action: ACTION, context: CONTEXT }) }));
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const id = created.body.stepup_id as string;
      const ticket = created.body.ticket as string;

      const verified = await json(await fetch(`${b.url}/v1/stepup/${id}/verify`, { method: 'POST', headers: { authorization: `Ticket ${ticket}`, 'content-type': 'application/json' }, body: JSON.stringify({ factor: 'password', password: PASSWORD }) }));
      assert.equal(verified.status, 200, JSON.stringify(verified.body));
      assert.equal(verified.body.completed, true);

      const polls = await Promise.all(
        Array.from({ length: 10 }, (_, i) => fetch(`${(i % 2 === 0 ? a : b).url}/v1/stepup/${id}/token`, { method: 'POST', headers: { authorization: pay.basic } }).then(json)),
      );
      const winners = polls.filter((p) => p.status === 200);
      assert.equal(winners.length, 1, polls.map((p) => `${p.status}:${String(p.body.code ?? '')}`).join(','));
      assert.ok(polls.filter((p) => p.status !== 200).every((p) => p.body.code === 'invalid_grant' || p.body.code === 'slow_down'));
      const token = winners[0]!.body.step_up_token as string;

      for (const gateway of [a, b]) {
        const claims = await verifyStepUpToken(token, {
          issuer: 'http://localhost:8080', audience: pay.clientId, jwks: createJwksCache({ jwksUri: `${gateway.url}/.well-known/jwks.json` }),
          requiredAcr: 'urn:stepgate:aal1', expectedSubject: userId, expectedAction: ACTION, expectedContext: CONTEXT, replayStore: new MemoryReplayStore(),
        });
        assert.equal(claims.txn, id);
      }
      const issued = await setup.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'stepup.token_issued').execute();
      assert.equal(issued.filter((e) => e.data.includes(id)).length, 1);
    });
  });
}
