import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { assignToken } from '../../src/flows/hardware-tokens.ts';
import { loginThrottleKey, normaliseUsername } from '../../src/flows/users.ts';
import { importTokenFile } from '../../src/flows/hardware-token-import.ts';
import { createJwksCache, PostgresReplayStore, verifyStepUpToken, isStepUpTokenError } from '../../src/verifier/index.ts';
import { TEST_DATABASE_URL } from '../helpers/env.ts';
import { needOathtool, oathHotp, randomSeedHex } from '../helpers/hardware-tokens.ts';
import { CONTEXT, PASSWORD_POLICIES } from '../helpers/payment-code.ts';
import { addPhone, codeInText } from '../helpers/sms.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';
import { type Answer, type Cluster, histogram, needsPostgres, pooled, record, send, startCluster } from './cluster.ts';

/**
 * Scale-out: two gateway processes and two payment-code service processes, each pair on one
 * PostgreSQL schema, behind round-robin proxies. Every single-use thing gets 1,000
 * concurrent duplicate submissions spread over both processes, and must be accepted exactly
 * once: a TOTP code (its time step), an HOTP code (its counter), an SMS code, the step-up
 * token handed out by the gateway, a token's jti at the relying service, a step-up at P (one
 * code per step-up), a payment code's redemption, and the sign-in failure counter (no more
 * failures charged than the lockout allows, none lost).
 */

const N = Number(process.env.STEPGATE_CHAOS_DUPLICATES ?? '1000');
const MAX_FAILURES = 5;
const SMS_GLOBAL_HOUR = 60;

describe('scale-out: single-use under 1,000 concurrent duplicates across two gateways and two payment-code services', { skip: needsPostgres() }, () => {
  let c: Cluster;
  let client: Awaited<ReturnType<typeof makeClient>>;
  let totpSecret: Buffer;
  let hotpSeed: string;
  const ids: Record<string, string> = {};

  before(async () => {
    c = await startCluster({
      gatewayConfig: {
        login: { maxFailures: MAX_FAILURES, lockSeconds: 600 },
        // Only the global budget is small: the test below floods it from one user and number.
        sms: { caps: { perNumber: { hour: 100_000, day: 100_000 }, perUser: { hour: 100_000, day: 100_000 }, perCountryCode: { hour: 100_000, day: 100_000 }, countryCodeOverrides: {}, global: { hour: SMS_GLOBAL_HOUR, day: 100_000 } } },
      },
      async seed(setup) {
        client = await makeClient(setup.gw, 'chaos client', ['chaos.totp', 'chaos.hotp', 'chaos.sms', 'chaos.pwd']);
        await setPolicies(setup.gw, [
          ...PASSWORD_POLICIES,
          { id: 'totp', action: 'chaos.totp', priority: 10, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 },
          { id: 'hotp', action: 'chaos.hotp', priority: 10, require: { anyOf: [['hardware_otp']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 },
          { id: 'sms', action: 'chaos.sms', priority: 10, require: { anyOf: [['sms_otp']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 },
          { id: 'pwd', action: 'chaos.pwd', priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1', tokenTtlSeconds: 120 },
        ]);
        for (const name of ['tina', 'hugo', 'sara', 'paul', 'lock-me']) ids[name] = (await makeUser(setup.gw, name)).id;
        totpSecret = (await insertActiveTotp(setup.gw, ids.tina!)).secret;
        await addPhone(setup.gw, ids.sara!, '+8613800138000');
        hotpSeed = randomSeedHex(20);
        await importTokenFile(setup.gw, { data: Buffer.from(`CHAOS-HOTP-1,${hotpSeed},hotp,6,0,SHA1`), fileName: 'chaos.csv', source: 'cli' }, { actor: 'test' });
        await assignToken(setup.gw, { actor: 'test', by: 'helpdesk' }, { serial: 'CHAOS-HOTP-1', userId: ids.hugo!, code: oathHotp(hotpSeed, 0), reason: 'chaos test' });
      },
    });
  });
  after(async () => {
    if (c !== undefined) {
      record({ test: 'scale-out proxy', perGateway: c.proxy.stats.perBackend, perPaymentCodeService: c.pProxy.stats.perBackend, badGateway: c.proxy.stats.badGateway + c.pProxy.stats.badGateway });
      await c.close();
    }
  });

  async function createStepUps(subject: string, action: string, n: number): Promise<{ stepup_id: string; ticket: string }[]> {
    const created = await pooled(n, 50, () => send(c.proxy.url, 'POST', '/v1/stepup', { subject, action, context: { amount: '10.00', currency: 'CNY' } }, { authorization: client.basic }));
    for (const r of created) assert.equal(r.status, 201, JSON.stringify(r.body));
    return created.map((r) => r.body as { stepup_id: string; ticket: string });
  }

  const verify = (s: { stepup_id: string; ticket: string }, body: Record<string, unknown>) => send(c.proxy.url, 'POST', `/v1/stepup/${s.stepup_id}/verify`, body, { authorization: `Ticket ${s.ticket}` });

  function summarise(name: string, answers: Answer[], accepted: number, extra: Record<string, unknown> = {}): void {
    record({ test: name, requests: answers.length, accepted, doubleAcceptances: Math.max(0, accepted - 1), failedWith5xx: answers.filter((a) => a.status >= 500 || a.status === 0).length, answers: histogram(answers), ...extra });
  }

  it(`a TOTP code: the same code on ${N} step-ups at once is accepted once (its time step is spent)`, async (t) => {
    if (needOathtool(t)) return;
    const stepUps = await createStepUps('tina', 'chaos.totp', N);
    const code = oathtoolTotp(totpSecret, DEFAULT_TOTP, Math.floor(Date.now() / 1000));
    const answers = await Promise.all(stepUps.map((s) => verify(s, { factor: 'totp', code })));
    const accepted = answers.filter((a) => a.status === 200).length;
    summarise('TOTP step', answers, accepted);
    assert.equal(accepted, 1, histogram(answers));
    assert.ok(answers.every((a) => a.status < 500 && a.status !== 0), histogram(answers));
  });

  it(`an HOTP code: the same code on ${N} step-ups at once is accepted once (the counter moves past it once)`, async (t) => {
    if (needOathtool(t)) return;
    const stepUps = await createStepUps('hugo', 'chaos.hotp', N);
    const code = oathHotp(hotpSeed, 1);
    const answers = await Promise.all(stepUps.map((s) => verify(s, { factor: 'hardware_otp', code })));
    const accepted = answers.filter((a) => a.status === 200).length;
    const token = await c.setup.gw.store.db.selectFrom('factors').select('counter').where('user_id', '=', ids.hugo!).where('type', '=', 'hardware_otp').executeTakeFirstOrThrow();
    summarise('HOTP counter', answers, accepted, { counterAfter: Number(token.counter) });
    assert.equal(accepted, 1, histogram(answers));
    assert.equal(Number(token.counter), 2, 'the counter moved past the accepted code once');
    assert.ok(answers.every((a) => a.status < 500 && a.status !== 0), histogram(answers));
  });

  async function smsStepUp(): Promise<{ s: { stepup_id: string; ticket: string }; code: string }> {
    const [s] = await createStepUps('sara', 'chaos.sms', 1);
    assert.ok(s !== undefined);
    const started = await send(c.proxy.url, 'POST', `/v1/stepup/${s.stepup_id}/challenge`, { factor: 'sms_otp' }, { authorization: `Ticket ${s.ticket}` });
    assert.equal(started.status, 200, JSON.stringify(started.body));
    const sent = await c.setup.gw.store.db.selectFrom('sms_outbox').select('text').orderBy('created_at', 'desc').executeTakeFirstOrThrow();
    return { s, code: codeInText(sent.text) };
  }

  it(`an SMS code: ${N} concurrent submissions of the right code are accepted exactly once; as many as the attempt limit, exactly once`, async () => {
    // N at once: the attempt budget (stepup.maxAttempts) is charged before any comparison; a
    // request refused for want of attempts changes nothing (only the one that spent the last
    // attempt may end the step-up, after its own comparison), so one charged, correct attempt
    // completes it.
    const flood = await smsStepUp();
    const answers = await Promise.all(Array.from({ length: N }, () => verify(flood.s, { factor: 'sms_otp', code: flood.code })));
    const accepted = answers.filter((a) => a.status === 200).length;
    // As many as the budget: none is refused for the budget, so exactly one wins the code.
    const max = c.setup.config.stepup.maxAttempts;
    const fair = await smsStepUp();
    const few = await Promise.all(Array.from({ length: max }, () => verify(fair.s, { factor: 'sms_otp', code: fair.code })));
    const fewAccepted = few.filter((a) => a.status === 200).length;
    summarise('SMS code', answers, accepted, { [`acceptedOf${max}`]: fewAccepted, [`answersOf${max}`]: histogram(few) });
    assert.equal(accepted, 1, histogram(answers));
    assert.equal(fewAccepted, 1, histogram(few));
    assert.ok([...answers, ...few].every((a) => a.status < 500 && a.status !== 0), histogram(answers));
  });

  it(`the global SMS budget: ${N / 4} challenges at once across both gateways send exactly what is left of the hour's ${SMS_GLOBAL_HOUR}`, async () => {
    // Not across an hour boundary (the budget is per clock hour).
    const left = 3_600_000 - (Date.now() % 3_600_000);
    if (left < 120_000) await new Promise((r) => setTimeout(r, left + 1000));
    const globalSent = async () => {
      const start = Math.floor(Date.now() / 3_600_000) * 3_600_000;
      const row = await c.setup.gw.store.db.selectFrom('sms_send_counters').select('count').where('key', '=', `global:hour:${start}:*`).executeTakeFirst();
      return Number(row?.count ?? 0);
    };
    const stepUps = await createStepUps('sara', 'chaos.sms', N / 4);
    const before = await globalSent();
    const outboxBefore = Number((await c.setup.gw.store.db.selectFrom('sms_outbox').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    const answers = await Promise.all(stepUps.map((s) => send(c.proxy.url, 'POST', `/v1/stepup/${s.stepup_id}/challenge`, { factor: 'sms_otp' }, { authorization: `Ticket ${s.ticket}` })));
    const sent = answers.filter((a) => a.status === 200).length;
    const outboxAfter = Number((await c.setup.gw.store.db.selectFrom('sms_outbox').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    record({ test: 'global SMS budget', requests: answers.length, budgetLeft: SMS_GLOBAL_HOUR - before, sent, messagesInOutbox: outboxAfter - outboxBefore, answers: histogram(answers) });
    assert.equal(sent, SMS_GLOBAL_HOUR - before, histogram(answers));
    assert.equal(outboxAfter - outboxBefore, sent, 'exactly the accepted ones were sent');
    assert.equal(await globalSent(), SMS_GLOBAL_HOUR);
    assert.ok(answers.filter((a) => a.status !== 200).every((a) => a.status === 429 && a.body.code === 'sms_limit_exceeded'), histogram(answers));
  });

  it(`the step-up token: ${N} concurrent retrievals of a completed step-up hand it out once`, async () => {
    const [s] = await createStepUps('paul', 'chaos.pwd', 1);
    assert.ok(s !== undefined);
    assert.equal((await verify(s, { factor: 'password', password: PASSWORD })).status, 200);
    await new Promise((r) => setTimeout(r, 1100)); // one poll interval after creation
    const answers = await Promise.all(Array.from({ length: N }, () => send(c.proxy.url, 'POST', `/v1/stepup/${s.stepup_id}/token`, undefined, { authorization: client.basic })));
    const tokens = answers.filter((a) => a.status === 200 && typeof a.body.step_up_token === 'string');
    summarise('step-up token retrieval', answers, tokens.length);
    assert.equal(tokens.length, 1, histogram(answers));
    assert.ok(answers.every((a) => a.status < 500 && a.status !== 0), histogram(answers));
  });

  it(`a token's jti at the relying service: ${N} concurrent verifications over two PostgreSQL pools accept it once`, async () => {
    const [s] = await createStepUps('paul', 'chaos.pwd', 1);
    assert.ok(s !== undefined);
    assert.equal((await verify(s, { factor: 'password', password: PASSWORD })).status, 200);
    await new Promise((r) => setTimeout(r, 1100));
    const got = await send(c.proxy.url, 'POST', `/v1/stepup/${s.stepup_id}/token`, undefined, { authorization: client.basic });
    assert.equal(got.status, 200, JSON.stringify(got.body));
    const token = got.body.step_up_token as string;
    const pools = [new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 5 }), new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 5 })];
    const schema = c.pConfig.database.schema;
    const stores = pools.map((pool) => new PostgresReplayStore({ pool, schema, tableName: 'chaos_replay' }));
    const jwks = createJwksCache({ jwksUri: `${c.proxy.url}/.well-known/jwks.json` });
    try {
      const outcomes = await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          try {
            await verifyStepUpToken(token, { issuer: c.setup.config.http.publicUrl, audience: client.clientId, jwks, expectedSubject: ids.paul!, expectedAction: 'chaos.pwd', expectedContext: { amount: '10.00', currency: 'CNY' }, replayStore: stores[i % 2]! });
            return 'accepted';
          } catch (err) {
            if (isStepUpTokenError(err)) return err.code;
            return `error: ${String(err)}`;
          }
        }),
      );
      const accepted = outcomes.filter((o) => o === 'accepted').length;
      const replayed = outcomes.filter((o) => o === 'replayed').length;
      record({ test: 'jti at the relying service', requests: N, accepted, doubleAcceptances: Math.max(0, accepted - 1), replayed });
      assert.equal(accepted, 1);
      assert.equal(replayed, N - 1, [...new Set(outcomes)].join(' '));
    } finally {
      for (const s2 of stores) await s2.close();
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it(`a step-up at the payment-code service: ${N} concurrent issuance requests naming it yield one code`, async () => {
    const first = await send(c.pProxy.url, 'POST', '/v1/payment-codes', { subject: ids.paul, context: CONTEXT }, { authorization: `Bearer ${c.wallet}` });
    assert.equal(first.status, 401, JSON.stringify(first.body));
    const stepupId = first.body.stepup_id as string;
    assert.equal((await verify({ stepup_id: stepupId, ticket: first.body.ticket as string }, { factor: 'password', password: PASSWORD })).status, 200);
    await new Promise((r) => setTimeout(r, 1100));
    const before = await c.pCount('pc_codes');
    const answers = await Promise.all(Array.from({ length: N }, () => send(c.pProxy.url, 'POST', '/v1/payment-codes', { subject: ids.paul, context: CONTEXT, stepup_id: stepupId }, { authorization: `Bearer ${c.wallet}` })));
    const issued = answers.filter((a) => a.status === 201);
    const stored = (await c.pCount('pc_codes')) - before;
    summarise('payment code per step-up', answers, issued.length, { codesStored: stored });
    assert.equal(issued.length, 1, histogram(answers));
    assert.equal(stored, 1, 'one code stored');
    assert.ok(answers.every((a) => a.status < 500 && a.status !== 0), histogram(answers));
  });

  it(`a payment code: ${N} concurrent redemptions over both services redeem it once`, async () => {
    const first = await send(c.pProxy.url, 'POST', '/v1/payment-codes', { subject: ids.paul, context: CONTEXT }, { authorization: `Bearer ${c.wallet}` });
    assert.equal((await verify({ stepup_id: first.body.stepup_id as string, ticket: first.body.ticket as string }, { factor: 'password', password: PASSWORD })).status, 200);
    await new Promise((r) => setTimeout(r, 1100));
    const issued = await send(c.pProxy.url, 'POST', '/v1/payment-codes', { subject: ids.paul, context: CONTEXT, stepup_id: first.body.stepup_id }, { authorization: `Bearer ${c.wallet}` });
    assert.equal(issued.status, 201, JSON.stringify(issued.body));
    const code = issued.body.code as string;
    const answers = await Promise.all(Array.from({ length: N }, () => send(c.pProxy.url, 'POST', '/v1/payment-codes/redeem', { code, amount: '9.99', merchant: 'shop-42' }, { authorization: `Bearer ${c.acquirer}` })));
    const redeemed = answers.filter((a) => a.status === 200).length;
    summarise('payment-code redemption', answers, redeemed);
    assert.equal(redeemed, 1, histogram(answers));
    assert.equal(answers.filter((a) => a.status === 409 && a.body.code === 'code_already_redeemed').length, N - 1, histogram(answers));
  });

  it(`the sign-in lockout: ${N} concurrent wrong passwords charge exactly ${MAX_FAILURES} failures, then the lock holds on both`, async () => {
    const answers = await Promise.all(Array.from({ length: N }, (_, i) => send(c.proxy.url, 'POST', '/v1/login', { username: 'lock-me', password: `wrong password ${i}` })));
    const charged = answers.filter((a) => a.status === 401 && a.body.code === 'invalid_credentials').length;
    const row = await c.setup.gw.store.db.selectFrom('login_throttle').select(['failures', 'locked_until']).where('key', '=', loginThrottleKey(c.setup.gw, normaliseUsername('lock-me'))).executeTakeFirstOrThrow();
    record({ test: 'sign-in lockout counter', requests: N, charged, failuresStored: Number(row.failures), limit: MAX_FAILURES, answers: histogram(answers) });
    assert.equal(Number(row.failures), MAX_FAILURES, histogram(answers));
    assert.ok(charged <= MAX_FAILURES, `at most ${MAX_FAILURES} compared: ${histogram(answers)}`);
    assert.ok(row.locked_until !== null);
    assert.ok(answers.every((a) => [401, 429, 503].includes(a.status)), histogram(answers));
    for (const g of c.gateways) {
      const right = await send(g.url, 'POST', '/v1/login', { username: 'lock-me', password: PASSWORD });
      assert.equal(right.status, 429, `locked on ${g.url}: ${JSON.stringify(right.body)}`);
    }
  });
});
