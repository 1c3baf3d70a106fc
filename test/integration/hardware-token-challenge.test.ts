import assert from 'node:assert/strict';
import { createSecretKey } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { FixedClock } from '../../src/clock.ts';
import { importTokenFile } from '../../src/flows/hardware-token-import.ts';
import { sm3Otp } from '../../src/otp/index.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { needPskc, randomSeedHex, writePskc } from '../helpers/hardware-tokens.ts';
import { signIn } from '../helpers/session.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * GM/T 0021 challenge-response tokens (Q mode): the file is written by python-pskc with a
 * ChallengeFormat; the token's answers are computed by src/otp/sm3.ts (checked against the
 * standard's vectors in test/unit/otp-sm3.test.ts: no independent SM3 token tool exists).
 * Binding uses the all-zeros challenge; a step-up asks its own, so an answer is good for that
 * step-up only.
 */
const ACTION = 'payment_code.issue';
const T0 = Date.UTC(2026, 2, 1, 9, 0, 5);

for (const dialect of testDialects()) {
  describe(`hardware tokens: GM/T 0021 challenge-response (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    const seed = randomSeedHex(32);
    const key = createSecretKey(Buffer.from(seed, 'hex'));
    const step = () => Math.floor(tg.clock.now().getTime() / 1000 / 60);
    const answer = (challenge: string, offset = 0) => sm3Otp(key, { time: step() + offset, challenge }, 6);

    before(async () => {
      tg = await createTestGateway({ dialect, clock: new FixedClock(T0) });
      await setPolicies(tg.gw, [{ id: 'token', action: ACTION, priority: 10, require: { anyOf: [['hardware_otp']] }, acr: 'urn:stepgate:aal2' }]);
      pay = await makeClient(tg.gw, 'payment-code service', [ACTION]);
      await makeUser(tg.gw, 'qiu');
    });
    after(async () => {
      await tg?.close();
    });

    async function stepUp() {
      const res = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'qiu', action: ACTION, context: { amount: '88.00', currency: 'CNY', payee: 'shop-7' } });
      assert.equal(res.status, 201, res.text);
      return res.body as { stepup_id: string; ticket: string };
    }
    const view = (s: { stepup_id: string; ticket: string }) => tg.http().get(`/v1/stepup/${s.stepup_id}`).set('Authorization', `Ticket ${s.ticket}`);
    const verify = (s: { stepup_id: string; ticket: string }, code: string) => tg.http().post(`/v1/stepup/${s.stepup_id}/verify`).set('Authorization', `Ticket ${s.ticket}`).send({ factor: 'hardware_otp', code });

    it('imports a python-pskc file with a ChallengeFormat; refuses one on a non-SM3 key or with a non-decimal challenge', async (t) => {
      if (needPskc(t)) return;
      const refused = await importTokenFile(
        tg.gw,
        {
          data: writePskc({
            tokens: [
              { serial: 'Q-BAD-1', secret_hex: randomSeedHex(), algorithm: 'totp', time_interval: 60, suite: 'SHA1', challenge_encoding: 'DECIMAL', challenge_min_length: 8, challenge_max_length: 8 },
              { serial: 'Q-BAD-2', secret_hex: randomSeedHex(), algorithm: 'totp', time_interval: 60, suite: 'SM3', challenge_encoding: 'HEXADECIMAL', challenge_min_length: 8, challenge_max_length: 8 },
            ],
          }),
          fileName: 'bad.pskc',
          source: 'cli',
        },
        { actor: 'test' },
      ).then(
        () => assert.fail('imported'),
        (err: { code?: string; invalidParams?: { pointer: string; reason: string }[] }) => err,
      );
      assert.equal(refused.code, 'token_import_rejected');
      const reasons = (refused.invalidParams ?? []).map((p) => p.reason);
      assert.equal(reasons.length, 2, JSON.stringify(reasons));
      assert.match(reasons[0] ?? '', /^serial Q-BAD-1: unsupported_algorithm: challenge-response is supported for GM\/T 0021 SM3 tokens only/);
      assert.match(reasons[1] ?? '', /^serial Q-BAD-2: unsupported_algorithm: challenge encoding HEXADECIMAL is not DECIMAL/);
      assert.equal((await tg.gw.store.db.selectFrom('hardware_tokens').select('id').where('serial', 'like', 'Q-BAD%').execute()).length, 0, 'nothing imported');

      const ok = await importTokenFile(
        tg.gw,
        { data: writePskc({ tokens: [{ serial: 'Q-0001', secret_hex: seed, algorithm: 'totp', time_interval: 60, suite: 'SM3', challenge_encoding: 'DECIMAL', challenge_min_length: 8, challenge_max_length: 8, manufacturer: 'Feitian' }] }), fileName: 'q.pskc', source: 'cli' },
        { actor: 'test' },
      );
      assert.equal(ok.tokenCount, 1);
      const row = await tg.gw.store.db.selectFrom('hardware_tokens').select(['challenge_length', 'algorithm', 'period_seconds']).where('serial', '=', 'Q-0001').executeTakeFirstOrThrow();
      assert.deepEqual({ q: row.challenge_length, alg: row.algorithm, period: Number(row.period_seconds) }, { q: 8, alg: 'SM3', period: 60 });
    });

    it('binds with the all-zeros challenge (a plain time code is refused)', async (t) => {
      if (needPskc(t)) return;
      const s = await signIn(tg, 'qiu', PASSWORD);
      const bind = (code: string) => tg.http().post('/v1/me/factors/hardware_otp').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ serial: 'Q-0001', code, label: 'Bank token' });
      const plain = await bind(sm3Otp(key, { time: step() }, 6));
      assert.equal(plain.body.code, 'token_bind_failed', 'a code without the challenge is not this token answering');
      const bound = await bind(answer('00000000'));
      assert.equal(bound.status, 201, bound.text);
      const listed = (await tg.http().get('/v1/me/factors').set('Cookie', s.cookie)).body.factors as { type: string; details: Record<string, unknown> }[];
      assert.equal(listed.find((f) => f.type === 'hardware_otp')?.details.challengeLength, 8, 'listed as a challenge-response token');
    });

    it('a step-up asks its own challenge; the answer to it completes this step-up and no other', async (t) => {
      if (needPskc(t)) return;
      tg.clock.advance(60);
      const a = await stepUp();
      const b = await stepUp();
      const qa = ((await view(a)).body.token_challenges as { serial: string; challenge: string }[])[0];
      const qb = ((await view(b)).body.token_challenges as { serial: string; challenge: string }[])[0];
      assert.ok(qa !== undefined && qb !== undefined);
      assert.equal(qa.serial, 'Q-0001');
      assert.match(qa.challenge, /^\d{8}$/);
      assert.notEqual(qa.challenge, qb.challenge, 'each step-up its own challenge');
      assert.equal((await view(a)).body.token_challenges[0].challenge, qa.challenge, 'stable for the step-up');

      const page = await tg.http().get(`/stepup/${a.stepup_id}?ticket=${a.ticket}`);
      const cookie = (page.headers['set-cookie'] as unknown as string[]).map((c) => c.split(';')[0]).join('; ');
      const html = (await tg.http().get(`/stepup/${a.stepup_id}`).set('Cookie', cookie).set('Accept-Language', 'en')).text;
      assert.match(html, new RegExp(`data-challenge>${qa.challenge}<`), 'the page shows the same challenge');

      assert.equal((await verify(a, answer(qb.challenge))).body.code, 'factor_invalid', "the answer to b's challenge does not complete a");
      assert.equal((await verify(a, answer('00000000'))).body.code, 'factor_invalid', 'nor the binding challenge');
      assert.equal((await verify(a, sm3Otp(key, { time: step() }, 6))).body.code, 'factor_invalid', 'nor a plain time code');
      const done = await verify(a, answer(qa.challenge));
      assert.equal(done.status, 200, done.text);
      assert.equal(done.body.completed, true);
      assert.equal((await verify(b, answer(qb.challenge))).body.code, 'factor_invalid', 'the same time step is used once, also across step-ups');
      tg.clock.advance(60);
      assert.equal((await verify(b, answer(qb.challenge))).status, 200, 'next step, b completes with its own challenge');
    });

    it('twenty concurrent submissions of the right answer complete the step-up once', async (t) => {
      if (needPskc(t)) return;
      tg.clock.advance(60);
      const s = await stepUp();
      const q = (await view(s)).body.token_challenges[0].challenge as string;
      const results = await Promise.all(Array.from({ length: 20 }, () => verify(s, answer(q))));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => r.body.code ?? r.status).join(','));
    });
  });
}
