import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { systemClock } from '../../src/clock.ts';
import { verifyEventChain } from '../../src/payment-code/events.ts';
import { openConfiguredPaymentCodeStore } from '../../src/payment-code/service.ts';
import type { PaymentCodeConfig } from '../../src/payment-code/config.ts';
import { needTool } from '../helpers/env.ts';
import {
  bearer,
  call,
  completeWithPassword,
  CONTEXT,
  createPDatabase,
  type GatewayForP,
  issueWithStepUp,
  makeApiKeys,
  PASSWORD_POLICIES,
  type PDatabase,
  pConfig,
  spawnP,
  type SpawnedP,
  startGatewayForP,
  zbar,
} from '../helpers/payment-code.ts';
import { testDialects } from '../helpers/stores.ts';
import { setPolicies } from '../helpers/stepup-fixtures.ts';

/**
 * The payment-code service as a real second process (`stepgate payment-code-service`, own
 * database, configured only through STEPGATE_PAYMENT_CODE_*), against a gateway on a real
 * port, on each database.
 */
const execFileAsync = promisify(execFile);
const CHALLENGE = /^Bearer error="insufficient_user_authentication", error_description="[^"]+", acr_values="urn:stepgate:aal1", max_age=300$/;

for (const dialect of testDialects()) {
  describe(`payment-code service across two processes (${dialect})`, () => {
    let g: GatewayForP;
    let db: PDatabase;
    let config: PaymentCodeConfig;
    let p: SpawnedP;
    let wallet: string;
    let otherWallet: string;
    let acquirer: string;
    let scratch: string;

    before(async () => {
      g = await startGatewayForP(dialect, { clock: systemClock });
      db = createPDatabase(dialect);
      config = pConfig(g, db);
      [wallet, otherWallet, acquirer] = (await makeApiKeys(config, [
        { name: 'wallet', role: 'wallet' },
        { name: 'another wallet', role: 'wallet' },
        { name: 'till', role: 'acquirer' },
      ])) as [string, string, string];
      p = await spawnP(config);
      scratch = mkdtempSync(join(tmpdir(), 'stepgate-pc-img-'));
    });
    after(async () => {
      await p?.stop();
      await g?.close();
      await db?.drop();
      if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
    });

    async function countCodes(): Promise<number> {
      const store = await openConfiguredPaymentCodeStore(config);
      try {
        const row = await store.db.selectFrom('pc_codes').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
        return Number(row.n);
      } finally {
        await store.close();
      }
    }

    it('full flow over HTTP: 401 with the step-up, the user completes it at the gateway, the code, its pictures, one redemption', async (t) => {
      const codesBefore = await countCodes();
      const first = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      assert.equal(first.status, 401, first.text);
      assert.equal(first.body.code, 'step_up_required');
      assert.match(first.headers.get('www-authenticate') ?? '', CHALLENGE);
      assert.match(first.headers.get('content-type') ?? '', /^application\/problem\+json/);
      assert.match(String(first.body.stepup_id), /^stp_/);
      assert.ok(String(first.body.user_url).startsWith(`${g.issuer}/stepup/${first.body.stepup_id}?ticket=`));
      assert.deepEqual(first.body.options, [['password']]);
      // No code exists before the step-up is done.
      assert.equal(await countCodes(), codesBefore);

      // The gateway shows the user exactly what P asked for.
      const status = await call(g.url, 'GET', `/v1/stepup/${first.body.stepup_id}`, undefined, { authorization: `Ticket ${first.body.ticket}` });
      assert.deepEqual(status.body.context, { amount: '120.00', currency: 'CNY', deviceId: 'phone-1', payee: 'shop-42' });
      assert.equal(status.body.binding_message, 'Payment code for up to 120.00 CNY at shop-42');

      const early = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: first.body.stepup_id }, bearer(wallet));
      assert.equal(early.status, 401);
      assert.equal(early.body.code, 'step_up_pending');
      assert.ok(Number(early.headers.get('retry-after')) >= 1);

      assert.equal((await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string)).status, 200);
      await new Promise((r) => setTimeout(r, 1100)); // the gateway's polling interval (1 s here)
      const issued = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: first.body.stepup_id }, bearer(wallet));
      assert.equal(issued.status, 201, issued.text);
      const code = issued.body.code as string;
      assert.match(code, /^181\d{15}$/);
      assert.equal(issued.body.subject, g.alice.id);
      assert.equal(issued.body.amount_limit, '120.00');
      assert.equal(issued.body.expires_in, 60);
      assert.equal(issued.headers.get('cache-control'), 'no-store');

      if (!needTool(t, 'zbarimg', 'zbar-tools')) {
        // The pictures are fetched with the wallet's key from the URLs in the answer.
        const picture = async (part: unknown) => {
          const res = await fetch(`${p.url}${new URL((part as { url: string }).url).pathname}`, { headers: bearer(wallet) });
          assert.equal(res.status, 200);
          assert.equal(res.headers.get('cache-control'), 'no-store');
          return Buffer.from(await res.arrayBuffer());
        };
        const signed = issued.body.signed_qr as { payload: string };
        assert.deepEqual(await zbar(await picture(issued.body.barcode), scratch, 'barcode'), [code]);
        assert.deepEqual(await zbar(await picture(issued.body.qr), scratch, 'qr'), [code]);
        assert.deepEqual(await zbar(await picture(issued.body.signed_qr), scratch, 'signed'), [signed.payload]);
      }

      const redeemed = await call(p.url, 'POST', '/v1/payment-codes/redeem', { code, amount: '99.50', merchant: 'shop-42' }, bearer(acquirer));
      assert.equal(redeemed.status, 200, redeemed.text);
      assert.equal(redeemed.body.subject, g.alice.id);
      assert.equal(redeemed.body.kind, 'online');
      assert.equal(redeemed.body.amount, '99.50');
      const again = await call(p.url, 'POST', '/v1/payment-codes/redeem', { code, amount: '1.00', merchant: 'shop-42' }, bearer(acquirer));
      assert.equal(again.status, 409);
      assert.equal(again.body.code, 'code_already_redeemed');

      // P's own event chain holds the story and verifies; its log holds no secret.
      const store = await openConfiguredPaymentCodeStore(config);
      try {
        const types = (await store.db.selectFrom('pc_events').select('type').execute()).map((r) => r.type);
        for (const type of ['stepup.requested', 'code.issued', 'code.redeemed']) assert.ok(types.includes(type), type);
        assert.equal((await verifyEventChain(store.db)).ok, true);
      } finally {
        await store.close();
      }
      const logs = p.stdout() + p.stderr();
      assert.ok(!logs.includes(code), 'the code is never logged');
      assert.ok(!logs.includes(first.body.ticket as string), 'the ticket is never logged');
      assert.ok(!logs.includes(wallet), 'the API key is never logged');
    });

    it('a step-up is good for one code: the same stepup_id again is refused, and so are ids that are not ours', async () => {
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      assert.equal(issued.status, 201, issued.text);
      const stepupId = (await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet))).body.stepup_id;
      assert.ok(stepupId);
      // Reusing the completed step-up of the first code:
      const usedId = await (async () => {
        const store = await openConfiguredPaymentCodeStore(config);
        try {
          return (await store.db.selectFrom('pc_codes').select('stepup_id').where('id', '=', issued.body.code_id as string).executeTakeFirstOrThrow()).stepup_id;
        } finally {
          await store.close();
        }
      })();
      const reuse = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: usedId }, bearer(wallet));
      assert.equal(reuse.status, 401);
      assert.equal(reuse.body.code, 'step_up_used');
      assert.match(reuse.headers.get('www-authenticate') ?? '', CHALLENGE);
      // Another wallet cannot complete our step-up; an invented id is unknown.
      const foreign = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: usedId }, bearer(otherWallet));
      assert.equal(foreign.body.code, 'step_up_unknown');
      const invented = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: 'stp_AAAAAAAAAAAAAAAAAAAAAA' }, bearer(wallet));
      assert.equal(invented.status, 401);
      assert.equal(invented.body.code, 'step_up_unknown');
    });

    it('a token whose context differs from the request is refused (amount, device), and the right request still works', async () => {
      const first = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string);
      const id = first.body.stepup_id;
      const more = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: { ...CONTEXT, amountLimit: '1200.00' }, stepup_id: id }, bearer(wallet));
      assert.equal(more.status, 401, more.text);
      assert.equal(more.body.code, 'context_mismatch');
      assert.equal(more.body.field, 'amount');
      const device = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: { ...CONTEXT, deviceId: 'phone-2' }, stepup_id: id }, bearer(wallet));
      assert.equal(device.body.code, 'context_mismatch');
      assert.equal(device.body.field, 'deviceId');
      const noPayee = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: { amountLimit: '120.00', currency: 'CNY', deviceId: 'phone-1' }, stepup_id: id }, bearer(wallet));
      assert.equal(noPayee.body.code, 'context_mismatch');
      // "120.0" is the same money in another spelling: never a second binding of it (refused as
      // it stands, before the token is even looked at), and the step-up stays usable.
      const sameRepresentation = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: { ...CONTEXT, amountLimit: '120.0' }, stepup_id: id }, bearer(wallet));
      assert.equal(sameRepresentation.status, 400, sameRepresentation.text);
      assert.equal(sameRepresentation.body.code, 'amount_not_canonical', '"120.0" is not what the user approved ("120.00")');
      const right = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: id }, bearer(wallet));
      assert.equal(right.status, 201, right.text);
    });

    it('parallel requests with one completed step-up make exactly one code', async () => {
      const first = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string);
      const results = await Promise.all(
        Array.from({ length: 10 }, () => call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: first.body.stepup_id }, bearer(wallet))),
      );
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 201).length, 1, results.map((r) => r.body.code).join(','));
      for (const r of results.filter((x) => x.status !== 201)) {
        assert.equal(r.status, 401);
        assert.ok(['replayed', 'step_up_used'].includes(r.body.code as string), String(r.body.code));
      }
    });

    it('double redemption in parallel: exactly one wins', async () => {
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      assert.equal(issued.status, 201, issued.text);
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => call(p.url, 'POST', '/v1/payment-codes/redeem', { code: issued.body.code, amount: '10.00', merchant: `shop-42` }, { ...bearer(acquirer), 'x-request-id': `parallel-redeem-${i}` })),
      );
      assert.equal(results.filter((r) => r.status === 200).length, 1);
      for (const r of results.filter((x) => x.status !== 200)) assert.equal(r.body.code, 'code_already_redeemed');
      const store = await openConfiguredPaymentCodeStore(config);
      try {
        const rows = await store.db.selectFrom('pc_redemptions').select('id').where('code_id', '=', issued.body.code_id as string).execute();
        assert.equal(rows.length, 1);
      } finally {
        await store.close();
      }
    });

    it('redemption refuses what the payer did not authorise, with distinct codes, and leaves the code usable', async () => {
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      const code = issued.body.code as string;
      const redeem = (body: Record<string, unknown>) => call(p.url, 'POST', '/v1/payment-codes/redeem', { code, amount: '10.00', merchant: 'shop-42', ...body }, bearer(acquirer));
      const over = await redeem({ amount: '120.01' });
      assert.equal(over.status, 422);
      assert.equal(over.body.code, 'amount_exceeds_limit');
      assert.equal((await redeem({ merchant: 'shop-43' })).body.code, 'merchant_mismatch');
      assert.equal((await redeem({ currency: 'USD' })).body.code, 'currency_mismatch');
      const unknown = await redeem({ code: `181${'0'.repeat(15)}` });
      assert.equal(unknown.status, 404);
      assert.equal(unknown.body.code, 'code_unknown');
      assert.equal((await redeem({ code: `991${code.slice(3)}` })).body.code, 'code_unknown', 'another prefix is not ours');
      // Finer than the fen: no amount that can be charged; refused, not rounded into the limit.
      const fine = await redeem({ amount: '99.999' });
      assert.equal(fine.status, 400, fine.text);
      assert.equal(fine.body.code, 'amount_precision_exceeded');
      assert.deepEqual((fine.body.invalid_params as { pointer: string }[]).map((x) => x.pointer), ['/amount']);
      const unknownCurrency = await redeem({ currency: 'ZZZ' });
      assert.equal(unknownCurrency.body.code, 'currency_unsupported');
      assert.equal((await redeem({ amount: '120' })).status, 200, 'the limit itself is allowed, in fewer decimals too');
    });

    it('money that cannot be bound is refused at P with the gateway\'s codes, before the gateway is asked', async () => {
      const stepupsBefore = await g.tg.gw.store.db.selectFrom('stepups').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      const cases: [string, Record<string, unknown>, string, string][] = [
        ['/v1/payment-codes', { ...CONTEXT, amountLimit: '120.001' }, 'amount_precision_exceeded', '/context/amountLimit'],
        ['/v1/payment-codes', { ...CONTEXT, amountLimit: '120.5', currency: 'JPY' }, 'amount_precision_exceeded', '/context/amountLimit'],
        ['/v1/payment-codes', { ...CONTEXT, amountLimit: '120' }, 'amount_not_canonical', '/context/amountLimit'],
        ['/v1/payment-codes', { ...CONTEXT, amountLimit: '0120.00' }, 'amount_not_canonical', '/context/amountLimit'],
        ['/v1/payment-codes', { ...CONTEXT, currency: 'ZZZ' }, 'currency_unsupported', '/context/currency'],
        ['/v1/payment-codes', { ...CONTEXT, amountLimit: '1', currency: 'XAU' }, 'currency_unsupported', '/context/currency'],
        ['/v1/offline-seeds', { deviceId: 'phone-1', amountLimit: '50.005', currency: 'CNY' }, 'amount_precision_exceeded', '/context/amountLimit'],
      ];
      for (const [path, context, code, pointer] of cases) {
        const res = await call(p.url, 'POST', path, { subject: g.alice.id, context }, bearer(wallet));
        assert.equal(res.status, 400, `${JSON.stringify(context)}: ${res.text}`);
        assert.equal(res.body.code, code, JSON.stringify(context));
        assert.deepEqual((res.body.invalid_params as { pointer: string }[]).map((x) => x.pointer), [pointer], res.text);
      }
      const stepupsAfter = await g.tg.gw.store.db.selectFrom('stepups').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      assert.equal(Number(stepupsAfter.n), Number(stepupsBefore.n));
      // Yen, spelt as yen are: the whole flow works and the code carries the binding's bytes.
      await setPolicies(g.tg.gw, [...PASSWORD_POLICIES, { id: 'codes-yen', action: 'payment_code.issue', priority: 15, when: { amount: { lte: '100000', currency: 'JPY' } }, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }]);
      const yen = await issueWithStepUp(p.url, g.url, wallet, g.alice.id, { ...CONTEXT, amountLimit: '500', currency: 'JPY' });
      assert.equal(yen.status, 201, yen.text);
      assert.equal(yen.body.amount_limit, '500');
    });

    it('API keys: none, unknown, or of the wrong role are refused before anything happens', async () => {
      const none = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT });
      assert.equal(none.status, 401);
      assert.equal(none.body.code, 'unauthorized');
      const unknown = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(`pck_${'A'.repeat(43)}`));
      assert.equal(unknown.body.code, 'unauthorized');
      const acquirerIssues = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(acquirer));
      assert.equal(acquirerIssues.status, 403);
      assert.equal(acquirerIssues.body.code, 'forbidden');
      const walletRedeems = await call(p.url, 'POST', '/v1/payment-codes/redeem', { code: `181${'0'.repeat(15)}`, amount: '1.00', merchant: 'x' }, bearer(wallet));
      assert.equal(walletRedeems.status, 403);
    });

    it('bad input is a 400 naming the field and creates nothing, at P and at the gateway', async () => {
      const stepupsBefore = await g.tg.gw.store.db.selectFrom('stepups').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      const cases: [unknown, string][] = [
        [{ subject: g.alice.id, context: { ...CONTEXT, amountLimit: 120 } }, '/context/amountLimit'],
        [{ subject: g.alice.id, context: { ...CONTEXT, amountLimit: '1e3' } }, '/context/amountLimit'],
        [{ subject: g.alice.id, context: { ...CONTEXT, amountLimit: '0.00' } }, '/context/amountLimit'],
        [{ subject: g.alice.id, context: { ...CONTEXT, currency: 'cny' } }, '/context/currency'],
        [{ subject: g.alice.id, context: { ...CONTEXT, deviceId: 'a b' } }, '/context/deviceId'],
        [{ subject: g.alice.id, context: { ...CONTEXT, surprise: 1 } }, '/context/surprise'],
        // Letters only, but not NFC (conjoining jamo for 가, the Angstrom sign for Å): one spelling per payee.
        [{ subject: g.alice.id, context: { ...CONTEXT, payee: '\u1100\u1161 Mart' } }, '/context/payee'],
        [{ subject: g.alice.id, context: { ...CONTEXT, payee: '\u212b Shop' } }, '/context/payee'],
        [{ subject: g.alice.id, context: { ...CONTEXT, payee: 'shop\u200b42' } }, '/context/payee'],
        [{ subject: g.alice.id, context: CONTEXT, stepup_id: 'nope' }, '/stepup_id'],
        [{ context: CONTEXT }, '/subject'],
        [{ subject: 'alice', context: CONTEXT }, '/subject'],
        [{ subject: g.alice.id, context: CONTEXT, extra: true }, '/extra'],
      ];
      for (const [body, pointer] of cases) {
        const res = await call(p.url, 'POST', '/v1/payment-codes', body, bearer(wallet));
        assert.equal(res.status, 400, `${pointer}: ${res.text}`);
        assert.equal(res.body.code, 'validation_failed');
        assert.ok((res.body.invalid_params as { pointer: string }[]).some((x) => x.pointer === pointer), `${pointer}: ${res.text}`);
      }
      const unknownUser = await call(p.url, 'POST', '/v1/payment-codes', { subject: 'usr_mallory', context: CONTEXT }, bearer(wallet));
      assert.equal(unknownUser.status, 400);
      assert.deepEqual((unknownUser.body.invalid_params as { pointer: string }[]).map((x) => x.pointer), ['/subject']);
      const garbage = await call(p.url, 'POST', '/v1/payment-codes', '{"subject":', bearer(wallet));
      assert.equal(garbage.status, 400);
      assert.equal(garbage.body.code, 'invalid_json');
      // The amount given twice: refused with a pointer, not "the last one wins" (the gateway reads it the same way).
      const twice = await call(p.url, 'POST', '/v1/payment-codes', `{"subject":${JSON.stringify(g.alice.id)},"context":{"amount":"1.00","amount":"9999.00"}}`, bearer(wallet));
      assert.equal(twice.status, 400, twice.text);
      assert.equal(twice.body.code, 'duplicate_member');
      assert.deepEqual((twice.body.invalid_params as { pointer: string }[]).map((x) => x.pointer), ['/context/amount']);
      const form = await fetch(`${p.url}/v1/payment-codes/redeem`, { method: 'POST', headers: { ...bearer(acquirer), 'content-type': 'text/plain' }, body: 'code=1' });
      assert.equal(form.status, 415);
      const redeemBad = await call(p.url, 'POST', '/v1/payment-codes/redeem', { code: '1', amount: '-1', merchant: 'shop' }, bearer(acquirer));
      assert.equal(redeemBad.status, 400);
      assert.ok((redeemBad.body.invalid_params as { pointer: string }[]).some((x) => x.pointer === '/amount'));
      const stepupsAfter = await g.tg.gw.store.db.selectFrom('stepups').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      assert.equal(Number(stepupsAfter.n), Number(stepupsBefore.n));
    });

    it('two P processes on one database: a code is redeemed once, a step-up makes one code, across both', async () => {
      const second = await spawnP(config);
      try {
        const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
        assert.equal(issued.status, 201, issued.text);
        const redemptions = await Promise.all(
          Array.from({ length: 20 }, (_, i) => call(i % 2 === 0 ? p.url : second.url, 'POST', '/v1/payment-codes/redeem', { code: issued.body.code, amount: '1.00', merchant: 'shop-42' }, bearer(acquirer))),
        );
        assert.equal(redemptions.filter((r) => r.status === 200).length, 1);
        assert.ok(redemptions.filter((r) => r.status !== 200).every((r) => r.body.code === 'code_already_redeemed'));

        const first = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
        await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string);
        const issues = await Promise.all(
          Array.from({ length: 8 }, (_, i) => call(i % 2 === 0 ? p.url : second.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: first.body.stepup_id }, bearer(wallet))),
        );
        assert.equal(issues.filter((r) => r.status === 201).length, 1, issues.map((r) => r.body.code).join(','));
      } finally {
        await second.stop();
      }
    });

    it('the signed QR verifies with P’s JWKS in an independent verifier (python3-jwt)', async (t) => {
      if (needTool(t, 'python3', 'python3-jwt')) return;
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      const jwks = await call(p.url, 'GET', '/.well-known/jwks.json');
      assert.equal(jwks.status, 200);
      const keys = jwks.body.keys as Record<string, unknown>[];
      assert.equal(keys.length, 1);
      assert.equal(keys[0]?.kty, 'OKP');
      assert.equal(keys[0]?.crv, 'Ed25519');
      assert.equal(keys[0]?.d, undefined);
      const file = join(scratch, 'pc-jwks.json');
      writeFileSync(file, JSON.stringify(jwks.body));
      const script = new URL('../fixtures/pyjwt-verify-qr.py', import.meta.url).pathname;
      const payload = (issued.body.signed_qr as { payload: string }).payload;
      const { stdout } = await execFileAsync('/usr/bin/python3', [script, file, payload, config.http.publicUrl]);
      const verified = JSON.parse(stdout) as { header: Record<string, unknown>; claims: Record<string, unknown> };
      assert.equal(verified.header.alg, 'EdDSA');
      assert.equal(verified.header.typ, 'pcqr+jwt');
      assert.equal(verified.claims.lim, '120.00');
      assert.equal(verified.claims.cur, 'CNY');
      assert.match(String(verified.claims.sub), /^sh_/);
      assert.notEqual(verified.claims.sub, g.alice.id, 'the terminal sees a handle, not the user id');
      const tampered = `${payload.slice(0, -3)}${payload.at(-3) === 'A' ? 'B' : 'A'}${payload.slice(-2)}`;
      await assert.rejects(execFileAsync('/usr/bin/python3', [script, file, tampered, config.http.publicUrl]));
    });
  });
}
