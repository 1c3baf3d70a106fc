import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { FixedClock } from '../../src/clock.ts';
import { createClient } from '../../src/flows/clients.ts';
import type { PaymentCodeConfig } from '../../src/payment-code/config.ts';
import { verifyEventChain } from '../../src/payment-code/events.ts';
import { base32Decode, offlineCode, parseDeviceSeed } from '../../src/payment-code/offline-otp.ts';
import { purgeExpired } from '../../src/payment-code/purge.ts';
import { createQrKey, listQrKeys, PUBLISH_LEAD_SECONDS, RELOAD_INTERVAL_SECONDS, retireQrKey } from '../../src/payment-code/signing-keys.ts';
import { needTool } from '../helpers/env.ts';
import {
  bearer,
  call,
  completeWithPassword,
  CONTEXT,
  createPDatabase,
  type GatewayForP,
  type InProcessP,
  ISSUE,
  issueWithStepUp,
  makeApiKeys,
  OFFLINE,
  PASSWORD_POLICIES,
  type PDatabase,
  pConfig,
  startGatewayForP,
  startInProcessP,
} from '../helpers/payment-code.ts';
import { makeUser, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * The payment-code service and the gateway over real HTTP, both in this process so they can
 * share one frozen clock: expiry, offline time steps, lockout windows, and attacks that need a
 * hostile channel between the two (a proxy that swaps or replays tokens).
 */
const execFileAsync = promisify(execFile);
const T0 = Date.UTC(2026, 2, 1, 8, 0, 10);
const SEED_CONTEXT = { deviceId: 'phone-1', amountLimit: '50.00', currency: 'CNY' };

/** A channel between P and the gateway that can hand P a different token than the gateway did. */
async function tokenProxy(target: string) {
  let override: ((stepupId: string) => string | undefined) | undefined;
  const handedOut = new Map<string, string>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const headers: Record<string, string> = {};
        for (const h of ['authorization', 'content-type', 'accept']) if (typeof req.headers[h] === 'string') headers[h] = req.headers[h] as string;
        const upstream = await fetch(`${target}${req.url ?? '/'}`, { method: req.method ?? 'GET', headers, ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}) });
        let text = await upstream.text();
        const m = /^\/v1\/stepup\/([^/]+)\/token$/.exec(req.url ?? '');
        if (m !== null && upstream.status === 200) {
          const id = decodeURIComponent(m[1] as string);
          const body = JSON.parse(text) as { step_up_token: string };
          handedOut.set(id, body.step_up_token);
          const swapped = override?.(id);
          if (swapped !== undefined) text = JSON.stringify({ ...body, step_up_token: swapped });
        }
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') ?? 'application/json', ...(upstream.headers.get('retry-after') ? { 'retry-after': upstream.headers.get('retry-after') as string } : {}) });
        res.end(text);
      })().catch((err: unknown) => {
        res.writeHead(502);
        res.end(String(err));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    handedOut,
    swap(fn: ((stepupId: string) => string | undefined) | undefined) {
      override = fn;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

for (const dialect of testDialects()) {
  describe(`payment-code flows with a shared frozen clock (${dialect})`, () => {
    const clock = new FixedClock(T0);
    let g: GatewayForP;
    let db: PDatabase;
    let config: PaymentCodeConfig;
    let p: InProcessP;
    let proxy: Awaited<ReturnType<typeof tokenProxy>>;
    let wallet: string;
    let otherWallet: string;
    let acquirer: string;

    before(async () => {
      g = await startGatewayForP(dialect, { clock });
      proxy = await tokenProxy(g.url);
      db = createPDatabase(dialect);
      // P reaches the gateway's API through the proxy; keys and issuer are the gateway's own.
      config = pConfig({ ...g, url: proxy.url }, db, {
        gateway: { jwksUri: `${g.url}/.well-known/jwks.json` },
        offline: { periodSeconds: 30, maxCodes: 3, maxFailures: 3, failureWindowSeconds: 300 },
      });
      [wallet, otherWallet, acquirer] = (await makeApiKeys(config, [
        { name: 'wallet', role: 'wallet' },
        { name: 'other wallet', role: 'wallet' },
        { name: 'till', role: 'acquirer' },
      ])) as [string, string, string];
      p = await startInProcessP(config, { clock });
    });
    after(async () => {
      await p?.close();
      await proxy?.close();
      await g?.close();
      await db?.drop();
    });

    const redeem = (body: Record<string, unknown>) => call(p.url, 'POST', '/v1/payment-codes/redeem', { amount: '10.00', merchant: 'shop-42', ...body }, bearer(acquirer));

    async function provision(context: Record<string, unknown> = SEED_CONTEXT, key = wallet) {
      const first = await call(p.url, 'POST', '/v1/offline-seeds', { subject: g.alice.id, context }, bearer(key));
      assert.equal(first.status, 401, first.text);
      assert.equal(first.body.code, 'step_up_required');
      assert.equal((await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string)).status, 200);
      return call(p.url, 'POST', '/v1/offline-seeds', { subject: g.alice.id, context, stepup_id: first.body.stepup_id }, bearer(key));
    }

    it('an online code expires after its lifetime, and so does its signed QR', async () => {
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      assert.equal(issued.status, 201, issued.text);
      clock.advance(61);
      const late = await redeem({ code: issued.body.code });
      assert.equal(late.status, 410);
      assert.equal(late.body.code, 'code_expired');
      const lateQr = await redeem({ code: (issued.body.signed_qr as { payload: string }).payload });
      assert.equal(lateQr.body.code, 'code_expired');
    });

    it('pictures on demand: the answer links them; only the issuing wallet key gets them, while the code lives; the URL carries no code', async () => {
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      assert.equal(issued.status, 201, issued.text);
      const code = issued.body.code as string;
      const urls = ['barcode', 'qr', 'signed_qr'].map((k) => (issued.body[k] as { url: string; data?: string }));
      for (const u of urls) {
        assert.equal(u.data, undefined, 'nothing is rendered at issuance by default');
        assert.ok(u.url.startsWith(`${config.http.publicUrl}/v1/payment-codes/${issued.body.code_id}/images/`), u.url);
        assert.ok(!u.url.includes(code) && !u.url.includes(code.slice(3)), 'the digits are not in the URL');
      }
      // The URLs are under P's public URL; here P listens elsewhere.
      const path = (u: { url: string }) => new URL(u.url).pathname;
      const [barcode, qr, signed] = urls as [{ url: string }, { url: string }, { url: string }];
      for (const u of [barcode, qr, signed]) {
        const res = await fetch(`${p.url}${path(u)}`, { headers: bearer(wallet) });
        assert.equal(res.status, 200, path(u));
        assert.equal(res.headers.get('content-type'), 'image/png');
        assert.equal(res.headers.get('cache-control'), 'no-store');
        assert.deepEqual([...new Uint8Array(await res.arrayBuffer()).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      }
      // The same pictures as the inline ones of the old answer shape, byte for byte (the signed QR is signed again: Ed25519 is deterministic).
      const inline = await issueWithStepUp(p.url, g.url, wallet, g.alice.id, { ...CONTEXT, deviceId: 'phone-inline' }, { images: 'inline' });
      assert.equal(inline.status, 201, inline.text);
      for (const k of ['barcode', 'qr', 'signed_qr']) {
        const part = inline.body[k] as { url: string; data: string };
        assert.match(part.data, /^[A-Za-z0-9+/]+=*$/, `${k} inline`);
        const fetched = Buffer.from(await (await fetch(`${p.url}${path(part)}`, { headers: bearer(wallet) })).arrayBuffer());
        assert.equal(fetched.toString('base64'), part.data, `${k}: the URL gives the inline picture`);
      }
      assert.equal((await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, images: 'svg' }, bearer(wallet))).status, 400);

      // Another wallet, an acquirer, no key: as if there were no such code / not allowed.
      const other = await call(p.url, 'GET', path(barcode), undefined, bearer(otherWallet));
      assert.equal(other.status, 404);
      assert.equal(other.body.code, 'code_unknown');
      assert.equal((await call(p.url, 'GET', path(barcode), undefined, bearer(acquirer))).status, 403);
      assert.equal((await call(p.url, 'GET', path(barcode))).status, 401);
      // A handle opens for its own code only; tampered handles, ids and names are unknown codes.
      const [, , , id, , handle] = path(barcode).split('/') as string[];
      const otherHandle = path(inline.body.qr as { url: string }).split('/')[5] as string;
      const [v, kid, iv, ct, tag] = (handle as string).split('.') as [string, string, string, string, string];
      const flipped = `${v}.${kid}.${iv}.${ct.slice(0, 5)}${ct[5] === 'A' ? 'B' : 'A'}${ct.slice(6)}.${tag}`;
      for (const bad of [
        `/v1/payment-codes/${id}/images/${otherHandle}/barcode.png`,
        `/v1/payment-codes/${inline.body.code_id}/images/${handle}/barcode.png`,
        `/v1/payment-codes/${id}/images/${flipped}/barcode.png`,
        `/v1/payment-codes/${id}/images/${handle}x/barcode.png`,
        `/v1/payment-codes/${id}/images/${handle}/logo.png`,
        `/v1/payment-codes/${id}/images/${handle}/barcode.svg`,
        `/v1/payment-codes/pcd_nope/images/${handle}/barcode.png`,
      ]) {
        const res = await call(p.url, 'GET', bad, undefined, bearer(wallet));
        assert.equal(res.status, 404, bad);
        assert.equal(res.body.code, 'code_unknown', bad);
        assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/);
      }
      // Redeemed: no more pictures of it. Expired: neither.
      assert.equal((await redeem({ code: inline.body.code })).status, 200);
      const used = await call(p.url, 'GET', path(inline.body.barcode as { url: string }), undefined, bearer(wallet));
      assert.equal(used.status, 409);
      assert.equal(used.body.code, 'code_already_redeemed');
      clock.advance(61);
      const late = await call(p.url, 'GET', path(qr), undefined, bearer(wallet));
      assert.equal(late.status, 410);
      assert.equal(late.body.code, 'code_expired');
      assert.ok(!p.logs.text.includes(code) && !p.logs.text.includes(handle as string), 'neither the code nor its handle is logged');
      // Still: at rest the code is only its HMAC.
      const row = await p.svc.store.db.selectFrom('pc_codes').selectAll().where('id', '=', issued.body.code_id as string).executeTakeFirstOrThrow();
      assert.ok(!JSON.stringify(row).includes(code));
    });

    it('signed QR: redeemable once (it is the same authorisation as the digits); tampering is refused', async () => {
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      const payload = (issued.body.signed_qr as { payload: string }).payload;
      const [h, c, s] = payload.split('.') as [string, string, string];
      const claims = JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as Record<string, unknown>;
      const raised = `${h}.${Buffer.from(JSON.stringify({ ...claims, lim: '99999.00' })).toString('base64url')}.${s}`;
      const noneAlg = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'pcqr+jwt' })).toString('base64url')}.${c}.`;
      const flipped = `${h}.${c}.${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`;
      for (const bad of [raised, flipped, noneAlg, `${h}.${c}.${s}x`]) {
        const res = await redeem({ code: bad, amount: '1.00' });
        assert.ok(res.status === 400 || res.status === 404, res.text);
        assert.ok(['qr_invalid', 'code_unknown'].includes(res.body.code as string), res.text);
      }
      assert.equal((await redeem({ code: raised })).body.code, 'qr_invalid');
      const ok = await redeem({ code: payload });
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.kind, 'signed_qr');
      assert.equal(ok.body.subject, g.alice.id);
      assert.equal((await redeem({ code: payload })).body.code, 'code_already_redeemed');
      assert.equal((await redeem({ code: issued.body.code })).body.code, 'code_already_redeemed', 'the digits and the QR are one code');
    });

    it('a token for another audience is refused, even when a broken channel delivers it', async () => {
      const other = await createClient(g.tg.gw, { name: 'another service', actions: [ISSUE] }, { actor: 'test' });
      const otherBasic = `Basic ${Buffer.from(`${other.client.clientId}:${other.clientSecret}`).toString('base64')}`;
      const context = { amount: CONTEXT.amountLimit, currency: CONTEXT.currency, deviceId: CONTEXT.deviceId, payee: CONTEXT.payee };
      const theirs = await call(g.url, 'POST', '/v1/stepup', { subject: 'alice', action: ISSUE, context }, { authorization: otherBasic });
      assert.equal(theirs.status, 201, theirs.text);
      await completeWithPassword(g.url, theirs.body.stepup_id as string, theirs.body.ticket as string);
      const theirToken = await call(g.url, 'POST', `/v1/stepup/${theirs.body.stepup_id}/token`, undefined, { authorization: otherBasic });
      assert.equal(theirToken.status, 200);

      const first = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string);
      proxy.swap((id) => (id === first.body.stepup_id ? (theirToken.body.step_up_token as string) : undefined));
      try {
        const res = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: first.body.stepup_id }, bearer(wallet));
        assert.equal(res.status, 401, res.text);
        assert.equal(res.body.code, 'audience_invalid');
        assert.match(res.headers.get('www-authenticate') ?? '', /insufficient_user_authentication/);
      } finally {
        proxy.swap(undefined);
      }
      // The other service's step-up id is not ours either.
      const foreign = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: theirs.body.stepup_id }, bearer(wallet));
      assert.equal(foreign.body.code, 'step_up_unknown');
    });

    it('through a hostile channel: a replayed token, a fresh token of another step-up, another user’s token — all refused', async () => {
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      assert.equal(issued.status, 201);
      const stepupOfFirst = [...proxy.handedOut.keys()].at(-1) as string;
      const used = proxy.handedOut.get(stepupOfFirst) as string;

      const second = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      await completeWithPassword(g.url, second.body.stepup_id as string, second.body.ticket as string);
      proxy.swap((id) => (id === second.body.stepup_id ? used : undefined));
      try {
        const res = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: second.body.stepup_id }, bearer(wallet));
        assert.equal(res.status, 401, res.text);
        assert.equal(res.body.code, 'replayed');
      } finally {
        proxy.swap(undefined);
      }

      // A genuine, unused token of this service — but for a different step-up.
      const ctx = { amount: CONTEXT.amountLimit, currency: CONTEXT.currency, deviceId: CONTEXT.deviceId, payee: CONTEXT.payee };
      const direct = await call(g.url, 'POST', '/v1/stepup', { subject: 'alice', action: ISSUE, context: ctx }, { authorization: g.client.basic });
      await completeWithPassword(g.url, direct.body.stepup_id as string, direct.body.ticket as string);
      const fresh = (await call(g.url, 'POST', `/v1/stepup/${direct.body.stepup_id}/token`, undefined, { authorization: g.client.basic })).body.step_up_token as string;
      const third = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      await completeWithPassword(g.url, third.body.stepup_id as string, third.body.ticket as string);
      proxy.swap((id) => (id === third.body.stepup_id ? fresh : undefined));
      try {
        const res = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: third.body.stepup_id }, bearer(wallet));
        assert.equal(res.body.code, 'step_up_mismatch');
      } finally {
        proxy.swap(undefined);
      }

      // A genuine token of this service for the same request — but Bob's consent, not Alice's.
      await makeUser(g.tg.gw, 'bob');
      const bobs = await call(g.url, 'POST', '/v1/stepup', { subject: 'bob', action: ISSUE, context: ctx }, { authorization: g.client.basic });
      await completeWithPassword(g.url, bobs.body.stepup_id as string, bobs.body.ticket as string);
      const bobToken = (await call(g.url, 'POST', `/v1/stepup/${bobs.body.stepup_id}/token`, undefined, { authorization: g.client.basic })).body.step_up_token as string;
      const fourth = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      await completeWithPassword(g.url, fourth.body.stepup_id as string, fourth.body.ticket as string);
      proxy.swap((id) => (id === fourth.body.stepup_id ? bobToken : undefined));
      try {
        const res = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: fourth.body.stepup_id }, bearer(wallet));
        assert.equal(res.status, 401);
        assert.equal(res.body.code, 'subject_mismatch');
      } finally {
        proxy.swap(undefined);
      }
    });

    it('a held token that expires while the wallet retries is refused, and the step-up is over', async () => {
      const first = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string);
      const wrong = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: { ...CONTEXT, payee: 'shop-43' }, stepup_id: first.body.stepup_id }, bearer(wallet));
      assert.equal(wrong.body.code, 'context_mismatch');
      clock.advance(126);
      const late = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: first.body.stepup_id }, bearer(wallet));
      assert.equal(late.status, 401);
      assert.equal(late.body.code, 'token_expired');
      const after = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: first.body.stepup_id }, bearer(wallet));
      assert.equal(after.body.code, 'step_up_failed');
      // The log says why each token was refused — what an operator alerts on — and never the token.
      const refusals = p.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'step-up token refused' && l.stepupId === first.body.stepup_id);
      assert.deepEqual(
        refusals.map((l) => [l.reason, l.field]),
        [
          ['context_mismatch', 'payee'],
          ['token_expired', 'exp'],
        ],
      );
    });

    it('the gateway’s refusals reach the wallet: enrollment_required, access_denied; an unreachable gateway is a 503', async () => {
      const big = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: { ...CONTEXT, amountLimit: '5000.00' } }, bearer(wallet));
      assert.equal(big.status, 409, big.text);
      assert.equal(big.body.code, 'enrollment_required');
      await setPolicies(g.tg.gw, PASSWORD_POLICIES.filter((x) => x.action !== OFFLINE));
      try {
        const denied = await call(p.url, 'POST', '/v1/offline-seeds', { subject: g.alice.id, context: SEED_CONTEXT }, bearer(wallet));
        assert.equal(denied.status, 403, denied.text);
        assert.equal(denied.body.code, 'access_denied');
      } finally {
        await setPolicies(g.tg.gw, PASSWORD_POLICIES);
      }
      const downDb = createPDatabase('sqlite');
      const down = await startInProcessP(pConfig({ ...g, url: 'http://127.0.0.1:9' }, downDb), { clock });
      try {
        const [key] = await makeApiKeys(down.svc.config, [{ name: 'w', role: 'wallet' }]);
        const res = await call(down.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(key as string));
        assert.equal(res.status, 503);
        assert.equal(res.body.code, 'gateway_unavailable');
      } finally {
        await down.close();
        await downDb.drop();
      }
    });

    it('private_key_jwt: P can authenticate to the gateway with its own key instead of a secret', async () => {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const kid = 'pc-test-key';
      const client = await createClient(
        g.tg.gw,
        { name: 'payment-codes (pkjwt)', actions: [ISSUE], authMethod: 'private_key_jwt', jwks: { keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' }] } },
        { actor: 'test' },
      );
      const pdb = createPDatabase(dialect);
      const keyFile = join(pdb.dataDir, 'client-key.json');
      writeFileSync(keyFile, JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid, alg: 'EdDSA' }), { mode: 0o600 });
      const p2 = await startInProcessP(pConfig({ ...g, client: { ...g.client, clientId: client.client.clientId, secret: '' } }, pdb, { gateway: { clientAuth: 'private_key_jwt', clientSecret: '', clientKeyFile: keyFile } }), { clock });
      try {
        const [key] = await makeApiKeys(p2.svc.config, [{ name: 'w', role: 'wallet' }]);
        const issued = await issueWithStepUp(p2.url, g.url, key as string, g.alice.id);
        assert.equal(issued.status, 201, issued.text);
        assert.equal(issued.body.subject, g.alice.id);
      } finally {
        await p2.close();
        await pdb.drop();
      }
    });

    it('offline codes (oathtool makes them): valid now and one period ago, not two periods ago; each once; per-code limit', async (t) => {
      if (needTool(t, 'oathtool', 'oathtool')) return;
      const res = await provision();
      assert.equal(res.status, 201, res.text);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      const seed = parseDeviceSeed(res.body.device_seed as string);
      assert.ok(seed !== undefined);
      assert.equal(seed.prefix, '18');
      assert.equal(seed.slot, res.body.slot);
      assert.equal(res.body.algorithm, 'TOTP-HMAC-SHA256');
      assert.equal(res.body.subject, g.alice.id);
      const hex = (base32Decode((res.body.device_seed as string).split(':')[4] as string) as Buffer).toString('hex');
      const oath = async (at: Date) => {
        const { stdout } = await execFileAsync('oathtool', ['--totp=sha256', '--digits=8', `--time-step-size=${seed.periodSeconds}s`, `--now=@${Math.floor(at.getTime() / 1000)}`, hex]);
        return `${seed.prefix}2${seed.slot}${stdout.trim()}`;
      };
      const now = clock.now();
      assert.equal(await oath(now), offlineCode(seed, now), 'our reference generator agrees with oathtool');

      const tooMuch = await redeem({ code: await oath(now), amount: '50.01' });
      assert.equal(tooMuch.body.code, 'amount_exceeds_limit');
      const current = await redeem({ code: await oath(now), amount: '50.00' });
      assert.equal(current.status, 200, current.text);
      assert.equal(current.body.kind, 'offline');
      assert.equal(current.body.subject, g.alice.id);
      assert.equal(current.body.device_id, 'phone-1');
      const replay = await redeem({ code: await oath(now) });
      assert.equal(replay.status, 409);
      assert.equal(replay.body.code, 'code_already_redeemed');
      const previous = await redeem({ code: await oath(new Date(now.getTime() - 30_000)) });
      assert.equal(previous.status, 200, previous.text);
      const twoAgo = await redeem({ code: await oath(new Date(now.getTime() - 60_000)) });
      assert.equal(twoAgo.status, 404);
      assert.equal(twoAgo.body.code, 'code_unknown');
      // The cap (3 here): one more, then the seed is used up.
      const next = await redeem({ code: await oath(new Date(now.getTime() + 30_000)) });
      assert.equal(next.status, 200, next.text);
      clock.advance(60);
      const capped = await redeem({ code: await oath(clock.now()) });
      assert.equal(capped.status, 409);
      assert.equal(capped.body.code, 'seed_exhausted');
    });

    it('offline: wrong codes are counted before comparing and lock the device for the window; parallel guesses cannot exceed it', async () => {
      const res = await provision({ ...SEED_CONTEXT, deviceId: 'phone-lock' });
      const seed = parseDeviceSeed(res.body.device_seed as string);
      assert.ok(seed !== undefined);
      const good = offlineCode(seed, clock.now());
      const wrong = `${good.slice(0, 10)}${good.slice(10) === '00000000' ? '00000001' : '00000000'}`;
      const guesses = await Promise.all(Array.from({ length: 6 }, () => redeem({ code: wrong })));
      const codes = guesses.map((r) => r.body.code).sort();
      assert.equal(codes.filter((c) => c === 'code_unknown').length, 3, codes.join(','));
      assert.equal(codes.filter((c) => c === 'device_locked').length, 3, codes.join(','));
      const locked = await redeem({ code: good });
      assert.equal(locked.status, 423);
      assert.equal(locked.body.code, 'device_locked');
      assert.ok(Number(locked.headers.get('retry-after')) > 0);
      clock.advance(300);
      const fresh = offlineCode(seed, clock.now());
      assert.equal((await redeem({ code: fresh })).status, 200);
    });

    it('offline: a revoked seed is refused at once; a new seed for the device replaces the old; only its wallet can revoke it', async () => {
      const a = await provision({ ...SEED_CONTEXT, deviceId: 'phone-lost' });
      const seedA = parseDeviceSeed(a.body.device_seed as string);
      assert.ok(seedA !== undefined);
      const foreign = await call(p.url, 'POST', `/v1/offline-seeds/${a.body.seed_id}/revoke`, undefined, bearer(otherWallet));
      assert.equal(foreign.status, 404);
      assert.equal(foreign.body.code, 'seed_not_found');
      const revoked = await call(p.url, 'POST', `/v1/offline-seeds/${a.body.seed_id}/revoke`, undefined, bearer(wallet));
      assert.equal(revoked.status, 200, revoked.text);
      assert.equal(revoked.body.status, 'revoked');
      const again = await call(p.url, 'POST', `/v1/offline-seeds/${a.body.seed_id}/revoke`, undefined, bearer(wallet));
      assert.equal(again.body.status, 'revoked', 'idempotent');
      const refused = await redeem({ code: offlineCode(seedA, clock.now()) });
      assert.equal(refused.status, 410);
      assert.equal(refused.body.code, 'seed_revoked');

      const b = await provision({ ...SEED_CONTEXT, deviceId: 'phone-new' });
      const c = await provision({ ...SEED_CONTEXT, deviceId: 'phone-new' });
      const seedB = parseDeviceSeed(b.body.device_seed as string);
      const seedC = parseDeviceSeed(c.body.device_seed as string);
      assert.ok(seedB !== undefined && seedC !== undefined);
      assert.equal((await redeem({ code: offlineCode(seedB, clock.now()) })).body.code, 'seed_revoked');
      assert.equal((await redeem({ code: offlineCode(seedC, clock.now()) })).status, 200);
      const list = await call(p.url, 'GET', `/v1/offline-seeds?subject=${g.alice.id}`, undefined, bearer(wallet));
      const statuses = new Map((list.body.seeds as { seed_id: string; status: string }[]).map((s) => [s.seed_id, s.status]));
      assert.equal(statuses.get(b.body.seed_id as string), 'revoked');
      assert.equal(statuses.get(c.body.seed_id as string), 'active');
      assert.ok(!list.text.includes(c.body.device_seed as string), 'the seed is never shown again');
    });

    it('offline: a seed expires after its lifetime (7 days by default)', async () => {
      const res = await provision({ ...SEED_CONTEXT, deviceId: 'phone-old' });
      const seed = parseDeviceSeed(res.body.device_seed as string);
      assert.ok(seed !== undefined);
      assert.equal(Date.parse(res.body.expires_at as string) - clock.now().getTime(), 7 * 86_400_000);
      clock.advance(7 * 86_400 + 1);
      const late = await redeem({ code: offlineCode(seed, clock.now()) });
      assert.equal(late.status, 410);
      assert.equal(late.body.code, 'seed_expired');
    });

    it('the seed is sealed at rest and the online code is stored only as an HMAC', async () => {
      const res = await provision({ ...SEED_CONTEXT, deviceId: 'phone-sealed' });
      const secret = (res.body.device_seed as string).split(':')[4] as string;
      const row = await p.svc.store.db.selectFrom('pc_offline_seeds').selectAll().where('id', '=', res.body.seed_id as string).executeTakeFirstOrThrow();
      assert.match(row.seed_sealed, /^v1\./);
      const raw = base32Decode(secret) as Buffer;
      assert.ok(!row.seed_sealed.includes(raw.toString('base64url')) && !row.seed_sealed.includes(secret));
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      const code = await p.svc.store.db.selectFrom('pc_codes').selectAll().where('id', '=', issued.body.code_id as string).executeTakeFirstOrThrow();
      assert.ok(!JSON.stringify(code).includes(issued.body.code as string));
      const tokens = await p.svc.store.db.selectFrom('pc_stepups').select(['token_sealed', 'status']).where('status', '=', 'used').execute();
      assert.ok(tokens.every((t) => t.token_sealed === null), 'a used token is not kept');
      assert.ok(!p.logs.text.includes(issued.body.code as string));
      assert.ok(!p.logs.text.includes(secret));
    });

    it('the demo wallet exists in development only and its forms need the CSRF token', async () => {
      const page = await fetch(`${p.url}/demo`);
      assert.equal(page.status, 200);
      const html = await page.text();
      assert.match(html, /DEMO — development only/);
      assert.match(html, /<html lang="en">/);
      const zh = await fetch(`${p.url}/demo`, { headers: { 'accept-language': 'zh-CN,zh;q=0.9,en;q=0.8' } });
      const zhHtml = await zh.text();
      assert.match(zhHtml, /<html lang="zh-CN">/);
      assert.match(zhHtml, /<h1>演示钱包<\/h1>/);
      assert.match(zhHtml, /显示我的付款码/);
      assert.ok(!zhHtml.includes('Show my payment code'), 'no English left on the Chinese page');
      const switched = await fetch(`${p.url}/demo?lang=en`, { headers: { 'accept-language': 'zh-CN' } });
      assert.match(await switched.text(), /<h1>Demo wallet<\/h1>/, 'the switch wins over Accept-Language');
      const langCookie = (switched.headers.getSetCookie().find((c) => c.startsWith('pc_demo_lang=')) ?? '').split(';')[0] as string;
      assert.equal(langCookie, 'pc_demo_lang=en');
      const remembered = await fetch(`${p.url}/demo`, { headers: { 'accept-language': 'zh-CN', cookie: langCookie } });
      assert.match(await remembered.text(), /<h1>Demo wallet<\/h1>/, 'and is remembered');
      const zhRefusal = await fetch(`${p.url}/demo/pay`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'accept-language': 'zh-CN' }, body: 'username=alice&amountLimit=1.00' });
      assert.equal(zhRefusal.status, 403);
      assert.match(await zhRefusal.text(), /表单已过期/, 'messages from the router are translated too');
      const noCsrf = await fetch(`${p.url}/demo/pay`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'username=alice&amountLimit=1.00' });
      assert.equal(noCsrf.status, 403);
      const prodDb = createPDatabase('sqlite');
      const prod = await startInProcessP(
        pConfig(g, prodDb, { http: { publicUrl: 'https://pay.example' }, gateway: { allowInsecureHttp: true } }, 'production'),
        { clock },
      );
      try {
        const res = await fetch(`${prod.url}/demo`);
        assert.equal(res.status, 404);
        assert.equal(((await res.json()) as { code: string }).code, 'not_found');
      } finally {
        await prod.close();
        await prodDb.drop();
      }
    });

    it('OpenAPI describes every JSON route; the event chain verifies and detects an edited row', async () => {
      const doc = (await call(p.url, 'GET', '/openapi.json')).body as { paths: Record<string, unknown> };
      for (const path of ['/v1/payment-codes', '/v1/payment-codes/redeem', '/v1/offline-seeds', '/v1/offline-seeds/{id}/revoke', '/.well-known/jwks.json']) assert.ok(doc.paths[path], path);
      const result = await verifyEventChain(p.svc.store.db);
      assert.equal(result.ok, true);
      assert.ok(result.rows > 10);
      const victim = await p.svc.store.db.selectFrom('pc_events').select(['seq', 'data']).where('type', '=', 'code.redeemed').orderBy('seq').executeTakeFirstOrThrow();
      await p.svc.store.db.updateTable('pc_events').set({ data: victim.data.replace('10.00', '1.00') }).where('seq', '=', victim.seq).execute();
      const broken = await verifyEventChain(p.svc.store.db);
      assert.equal(broken.ok, false);
      if (!broken.ok) assert.equal(broken.brokenSeq, Number(victim.seq));
      await p.svc.store.db.updateTable('pc_events').set({ data: victim.data }).where('seq', '=', victim.seq).execute();
    });

    it('/metrics counts challenges, issuance, redemptions and refusals by bounded labels, never a code or a subject', async () => {
      const scrape = async () => {
        const res = await fetch(`${p.url}/metrics`);
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
        return res.text();
      };
      const value = (text: string, series: string): number => {
        const line = text.split('\n').find((l) => l.startsWith(`${series} `));
        return line === undefined ? 0 : Number(line.slice(series.length + 1));
      };
      const before = await scrape();
      const first = await call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT }, bearer(wallet));
      assert.equal(first.status, 401, first.text);
      assert.equal((await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string)).status, 200);
      const issue = () => call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, stepup_id: first.body.stepup_id }, bearer(wallet));
      const issued = await issue();
      assert.equal(issued.status, 201, issued.text);
      assert.equal((await redeem({ code: issued.body.code })).status, 200);
      assert.equal((await redeem({ code: issued.body.code })).body.code, 'code_already_redeemed');
      const reused = await issue();
      assert.ok(reused.status >= 400 && reused.status < 500, reused.text);
      const after = await scrape();
      const delta = (series: string) => value(after, series) - value(before, series);
      assert.equal(delta('stepgate_payment_code_stepup_required_total{action="payment_code.issue"}'), 1);
      assert.equal(delta('stepgate_payment_code_issued_total{kind="online"}'), 1);
      assert.equal(delta('stepgate_payment_code_redemptions_total{kind="online"}'), 1);
      assert.equal(delta('stepgate_payment_code_refused_total{operation="redeem",code="code_already_redeemed"}'), 1);
      assert.equal(delta(`stepgate_payment_code_refused_total{operation="issue",code="${reused.body.code as string}"}`), 1);
      assert.ok(delta('stepgate_payment_code_phase_duration_seconds_count{phase="token_verification"}') >= 1, 'token verification time is observed');
      assert.ok(delta('stepgate_payment_code_http_request_duration_seconds_count{method="POST",route="/v1/payment-codes/redeem",status="2xx"}') >= 1);
      assert.match(after, /^stepgate_payment_code_process_resident_memory_bytes /m);
      if (dialect === 'sqlite') {
        // The group WAL sync: fdatasyncs, and the writers answered after one (at least as many).
        assert.ok(delta('stepgate_payment_code_sqlite_wal_syncs_total') >= 1);
        assert.ok(delta('stepgate_payment_code_sqlite_wal_sync_waiters_total') >= delta('stepgate_payment_code_sqlite_wal_syncs_total'));
        assert.equal(delta('stepgate_payment_code_sqlite_wal_sync_failures_total'), 0);
      } else {
        assert.doesNotMatch(after, /^stepgate_payment_code_sqlite_wal_syncs_total /m);
      }
      for (const secret of [issued.body.code as string, g.alice.id]) assert.ok(!after.includes(secret), 'no code or subject in any label');
    });

    it('signed-QR key rotation: the new key is published at once, signs after the lead; a retired key verifies nothing', async () => {
      const kidOf = (body: Record<string, unknown>) => JSON.parse(Buffer.from(((body.signed_qr as { payload: string }).payload.split('.')[0] as string), 'base64url').toString('utf8')).kid as string;
      const jwksKids = async () => ((await call(p.url, 'GET', '/.well-known/jwks.json')).body.keys as { kid: string }[]).map((k) => k.kid);
      const before = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      const oldKid = kidOf(before.body);
      const newKid = await createQrKey(p.svc.store.db, p.svc.sealer, clock, p.svc.events, 'test');
      assert.deepEqual((await jwksKids()).slice(-2), [oldKid, newKid], 'published at once');
      clock.advance(RELOAD_INTERVAL_SECONDS + 1);
      const during = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      assert.equal(kidOf(during.body), oldKid, 'the old key signs during the lead, though the service has seen the new one');
      assert.equal(await retireQrKey(p.svc.store.db, clock, p.svc.events, oldKid, 'test'), 'signing', 'the key that signs cannot be retired');
      clock.advance(PUBLISH_LEAD_SECONDS);
      const afterLead = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      assert.equal(kidOf(afterLead.body), newKid);
      assert.equal((await redeem({ code: (afterLead.body.signed_qr as { payload: string }).payload })).status, 200, 'codes signed by the new key redeem');
      assert.equal(await retireQrKey(p.svc.store.db, clock, p.svc.events, newKid, 'test'), 'signing');
      assert.equal(await retireQrKey(p.svc.store.db, clock, p.svc.events, oldKid, 'test'), 'retired');
      assert.equal(await retireQrKey(p.svc.store.db, clock, p.svc.events, oldKid, 'test'), 'unknown', 'retiring twice changes nothing');
      assert.ok(!(await jwksKids()).includes(oldKid), 'a retired key leaves the JWKS');
      clock.advance(RELOAD_INTERVAL_SECONDS + 1);
      const stale = await redeem({ code: (during.body.signed_qr as { payload: string }).payload });
      assert.equal(stale.body.code, 'qr_invalid', 'a code signed by a retired key no longer verifies (not even as expired)');
      const views = await listQrKeys(p.svc.store.db, clock);
      assert.deepEqual(views.filter((k) => k.kid === oldKid || k.kid === newKid).map((k) => [k.status, k.signing]), [['retired', false], ['active', true]]);
    });

    it('housekeeping deletes what can no longer decide anything, and keeps the records', async () => {
      const issued = await issueWithStepUp(p.url, g.url, wallet, g.alice.id);
      clock.advance(2 * 86_400);
      const purged = await purgeExpired(p.svc.store.db, clock);
      assert.ok(purged.stepUps > 0 && purged.liveCodes > 0 && purged.offlineUses > 0 && purged.jtis > 0, JSON.stringify(purged));
      assert.equal((await redeem({ code: issued.body.code })).body.code, 'code_unknown');
      const codes = await p.svc.store.db.selectFrom('pc_codes').select('id').where('id', '=', issued.body.code_id as string).execute();
      assert.equal(codes.length, 1, 'the code record stays');
      assert.equal((await verifyEventChain(p.svc.store.db)).ok, true);
      assert.deepEqual(await purgeExpired(p.svc.store.db, clock), { stepUps: 0, liveCodes: 0, offlineUses: 0, jtis: 0 });
    });
  });
}
