import { type NextFunction, type Request, type Response, Router } from 'express';
import { z } from 'zod';
import { type ApiKeyCaller, authenticateApiKey } from '../api-keys.ts';
import { AMOUNT_PATTERN, amountUnits, assertBindableMoney } from '../decimal.ts';
import { PaymentCodeError } from '../errors.ts';
import { type CodeImage, CODE_IMAGES, codeImage, codeImagePath, isCodeImage } from '../code-images.ts';
import { ISSUE_ACTION, issueBindingMessage, issueCode, issueStepUpContext, renderCode } from '../issue-code.ts';
import { listSeeds, OFFLINE_SEED_ACTION, provisionSeed, revokeSeed, seedBindingMessage, seedStepUpContext, type SeedView } from '../offline-seeds.ts';
import { redeem } from '../redeem.ts';
import type { PaymentCodeService } from '../service.ts';
import type { ApiKeyRole } from '../store/schema.ts';
import type { ApiRoutes } from './api.ts';
import { requestIdOf } from './problem.ts';

const amount = z
  .string({ error: 'must be a decimal string such as "120.00"' })
  .regex(AMOUNT_PATTERN, 'must be a decimal string such as "120.00": up to 15 digits, up to 6 decimals, no sign or exponent')
  .refine((v) => (amountUnits(v) ?? 0n) > 0n, 'must be greater than 0');
const currency = z.string({ error: 'must be an ISO 4217 currency code' }).regex(/^[A-Z]{3}$/, 'must be an ISO 4217 currency code such as "CNY"');
const deviceId = z.string({ error: 'must be a string' }).regex(/^[A-Za-z0-9._:-]{1,64}$/, 'must be 1–64 letters, digits or . _ : -');
// A payee or merchant is compared byte for byte (the binding, the redemption): letters in NFC
// only, so "café" has one spelling (src/verifier/display-text.ts, the gateway's rule).
const label = z
  .string({ error: 'must be a string' })
  .regex(/^[\p{L}\p{N} ._:@&'-]{1,64}$/u, 'must be 1–64 letters, digits, blanks or . _ : @ & \' -')
  .refine((v) => v.normalize('NFC') === v, 'must be in Unicode Normalization Form C (NFC)');
// The gateway's user id, not a username: the token's `sub` must equal it (the verifier insists).
export const SUBJECT_PATTERN = /^usr_[A-Za-z0-9_-]{1,96}$/;
const subject = z.string({ error: 'must be the user id at the gateway (usr_…)' }).regex(SUBJECT_PATTERN, 'must be the user id at the gateway (usr_…), not a username');
const stepupId = z.string().regex(/^stp_[A-Za-z0-9_-]{10,64}$/, 'must be the stepup_id from the step-up challenge');
const redirect = {
  redirect_uri: z.url().max(2000).optional().describe('Where the gateway sends the user back (registered for this service at the gateway).'),
  state: z.string().max(512).optional(),
};

export const issueBody = z.strictObject({
  subject,
  context: z.strictObject({
    amountLimit: amount.describe('The most a merchant may charge with this code.'),
    currency,
    deviceId,
    payee: label.optional().describe('When given, only this merchant may redeem the code.'),
  }),
  stepup_id: stepupId.optional().describe('Absent: start a step-up (401). Present: the completed step-up for this exact request.'),
  images: z
    .enum(['url', 'inline'])
    .optional()
    .describe('url (default): each picture is a URL to fetch while the code is live (rendered on demand). inline: the base64 PNGs are in the answer too (rendered at issuance, slower).'),
  ...redirect,
});

export const redeemBody = z.strictObject({
  code: z.string().min(1).max(2048).describe('The 18 digits (barcode, plain QR, offline code) or a signed QR payload.'),
  amount,
  currency: currency.optional().describe('When given, must equal the authorised currency.'),
  merchant: label,
});

export function seedBodySchema(maxCodes: number) {
  return z.strictObject({
    subject,
    context: z.strictObject({
      deviceId,
      amountLimit: amount.describe('The most one offline code may be redeemed for.'),
      currency,
      maxCodes: z.number().int().min(1).max(maxCodes).optional().describe(`How many codes the seed may make (default and maximum ${maxCodes}).`),
    }),
    stepup_id: stepupId.optional(),
    ...redirect,
  });
}

const png = z.object({
  content_type: z.literal('image/png'),
  url: z.string().describe('GET with the same wallet key while the code is live (Cache-Control: no-store). Opaque: it carries no code.'),
  data: z.string().optional().describe('base64; only with images: "inline"'),
});
const issuedSchema = z.object({
  code_id: z.string(),
  code: z.string().describe('18 digits'),
  code_display: z.string(),
  subject: z.string().describe('The gateway user id (the token `sub`).'),
  amount_limit: z.string(),
  currency: z.string(),
  device_id: z.string(),
  payee: z.string().nullable(),
  acr: z.string(),
  issued_at: z.string(),
  expires_at: z.string(),
  expires_in: z.number().int(),
  barcode: png.extend({ format: z.literal('code128') }),
  qr: png,
  signed_qr: png.extend({ payload: z.string().describe('Compact JWS (EdDSA), verifiable with /.well-known/jwks.json') }),
});
const redemptionSchema = z.object({
  redemption_id: z.string(),
  kind: z.enum(['online', 'offline', 'signed_qr']),
  subject: z.string(),
  amount: z.string(),
  currency: z.string(),
  merchant: z.string(),
  code_id: z.string().nullable(),
  seed_id: z.string().nullable(),
  device_id: z.string(),
  redeemed_at: z.string(),
});
const seedViewSchema = z.object({
  seed_id: z.string(),
  subject: z.string(),
  device_id: z.string(),
  slot: z.string(),
  amount_limit: z.string(),
  currency: z.string(),
  max_codes: z.number().int(),
  codes_used: z.number().int(),
  status: z.enum(['active', 'revoked', 'expired']),
  created_at: z.string(),
  expires_at: z.string(),
  revoked_at: z.string().nullable(),
});
const provisionedSchema = z.object({
  seed_id: z.string(),
  device_seed: z.string().describe('pcs1:<prefix>:<slot>:<period>:<BASE32 seed> — shown this once'),
  algorithm: z.literal('TOTP-HMAC-SHA256'),
  slot: z.string(),
  prefix: z.string(),
  period_seconds: z.number().int(),
  digits: z.number().int(),
  subject: z.string(),
  device_id: z.string(),
  amount_limit: z.string(),
  currency: z.string(),
  max_codes: z.number().int(),
  expires_at: z.string(),
});

function caller(res: Response): ApiKeyCaller {
  const c = (res.locals as { caller?: ApiKeyCaller }).caller;
  if (c === undefined) throw new TypeError('route is not behind requireKey');
  return c;
}

const MONEY_POINTERS = { amount: '/context/amountLimit', currency: '/context/currency' };

/** Maps the gateway's field pointers (its step-up body) back to ours. */
function pointerMap(pointer: string): string {
  if (pointer === '/subject' || pointer === '/redirect_uri' || pointer === '/state') return pointer;
  if (pointer === '/context/amount') return '/context/amountLimit';
  if (pointer.startsWith('/context')) return pointer;
  return '';
}

function seedResource(s: SeedView): z.output<typeof seedViewSchema> {
  return {
    seed_id: s.seedId,
    subject: s.subject,
    device_id: s.deviceId,
    slot: s.slot,
    amount_limit: s.amountLimit,
    currency: s.currency,
    max_codes: s.maxCodes,
    codes_used: s.codesUsed,
    status: s.status,
    created_at: s.createdAt.toISOString(),
    expires_at: s.expiresAt.toISOString(),
    revoked_at: s.revokedAt === null ? null : s.revokedAt.toISOString(),
  };
}

const STEP_UP_RESPONSES = {
  401: { description: 'step_up_required (with stepup_id, user_url, ticket), step_up_pending, a refused token (context_mismatch, replayed, audience_invalid…), or unauthorized (API key)' },
  403: { description: 'forbidden (not a wallet key), or access_denied (no gateway policy allows it)' },
  409: { description: 'enrollment_required: the user has no factor the policy accepts' },
  503: { description: 'gateway_unavailable / service_unavailable' },
};

export function apiRouter(svc: PaymentCodeService, api: ApiRoutes): Router {
  const router = Router();
  // Counts the outcome of an operation for /metrics: a 401 step-up challenge, or a refusal by
  // its problem code. The error itself goes on unchanged.
  const counted = async <T>(operation: 'issue' | 'offline_seed' | 'redeem', action: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof PaymentCodeError) {
        if (err.code === 'step_up_required') svc.metrics.stepUpRequired.inc({ action });
        else svc.metrics.refused.inc({ operation, code: err.code });
      }
      throw err;
    }
  };
  const requireKey = (role: ApiKeyRole) => async (req: Request, res: Response, next: NextFunction) => {
    try {
      (res.locals as { caller?: ApiKeyCaller }).caller = await authenticateApiKey(svc.store.db, req.get('authorization'), role);
      next();
    } catch (err) {
      next(err);
    }
  };

  api.route(router, {
    method: 'post', path: '/v1/payment-codes', tag: 'codes', security: 'walletKey',
    summary: 'Wallet back end: issue an online payment code (the digits, the signed QR payload, and URLs of their barcode and QR pictures) once the user has stepped up for exactly this request.',
    body: issueBody,
    responses: { 201: { description: 'the code (valid paymentCode.codes.ttlSeconds)', schema: issuedSchema }, ...STEP_UP_RESPONSES },
  }, [requireKey('wallet')], async (_req, res, { body }) => {
    const owner = caller(res).id;
    assertBindableMoney(body.context.amountLimit, body.context.currency, MONEY_POINTERS);
    if (body.stepup_id === undefined) {
      await counted('issue', ISSUE_ACTION, () => svc.gate.begin({
        owner,
        action: ISSUE_ACTION,
        subject: body.subject,
        context: issueStepUpContext(body.context),
        bindingMessage: issueBindingMessage(body.context),
        ...(body.redirect_uri === undefined ? {} : { redirectUri: body.redirect_uri }),
        ...(body.state === undefined ? {} : { state: body.state }),
        requestId: requestIdOf(res),
        pointerMap,
      }));
      return;
    }
    const stepupId = body.stepup_id;
    const issued = await counted('issue', ISSUE_ACTION, () => issueCode(svc.issueDeps, { owner, subject: body.subject, stepupId, request: body.context, requestId: requestIdOf(res) }));
    const rendered = body.images === 'inline' ? await renderCode(issued, svc.issueDeps.observe) : undefined;
    svc.metrics.issued.inc({ kind: 'online' });
    const url = (image: CodeImage) => `${svc.config.http.publicUrl}${codeImagePath(issued.codeId, issued.imageHandle, image)}`;
    const inline = (png: Buffer | undefined) => (png === undefined ? {} : { data: png.toString('base64') });
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json({
      code_id: issued.codeId,
      code: issued.code,
      code_display: issued.codeGrouped,
      subject: issued.subject,
      amount_limit: issued.amountLimit,
      currency: issued.currency,
      device_id: issued.deviceId,
      payee: issued.payee,
      acr: issued.acr,
      issued_at: issued.issuedAt.toISOString(),
      expires_at: issued.expiresAt.toISOString(),
      expires_in: Math.round((issued.expiresAt.getTime() - issued.issuedAt.getTime()) / 1000),
      barcode: { format: 'code128', content_type: 'image/png', url: url('barcode'), ...inline(rendered?.barcodePng) },
      qr: { content_type: 'image/png', url: url('qr'), ...inline(rendered?.qrPng) },
      signed_qr: { payload: issued.signedQr, content_type: 'image/png', url: url('signed-qr'), ...inline(rendered?.signedQrPng) },
    } satisfies z.output<typeof issuedSchema>);
  });

  api.route(router, {
    method: 'get', path: '/v1/payment-codes/:code_id/images/:handle/:image', tag: 'codes', security: 'walletKey',
    summary: `Wallet back end: a picture of a live code (image: ${CODE_IMAGES.map((i) => `${i}.png`).join(', ')}), as the issuance answer links it. The wallet key that issued the code only.`,
    responses: {
      200: { description: 'image/png, Cache-Control: no-store' },
      401: { description: 'unauthorized' },
      403: { description: 'forbidden (not a wallet key)' },
      404: { description: 'code_unknown (also another caller\'s code or a wrong handle)' },
      409: { description: 'code_already_redeemed' },
      410: { description: 'code_expired' },
    },
  }, [requireKey('wallet')], async (req, res) => {
    const { code_id: codeId, handle, image } = req.params as Record<string, string | undefined>;
    const name = image?.endsWith('.png') ? image.slice(0, -'.png'.length) : '';
    if (codeId === undefined || handle === undefined || !isCodeImage(name)) throw new PaymentCodeError('code_unknown');
    const png = await codeImage(svc.issueDeps, { owner: caller(res).id, codeId, imageHandle: handle, image: name });
    res.setHeader('Cache-Control', 'no-store');
    res.type('image/png').send(png);
  });

  api.route(router, {
    method: 'post', path: '/v1/payment-codes/redeem', tag: 'codes', security: 'acquirerKey',
    summary: 'Acquirer / POS: redeem a code (online, offline or signed QR) for an amount at a merchant. Exactly once.',
    body: redeemBody,
    responses: {
      200: { description: 'redeemed: the payer and the recorded redemption', schema: redemptionSchema },
      400: { description: 'validation_failed, or qr_invalid (a signed QR that does not verify)' },
      401: { description: 'unauthorized' },
      403: { description: 'forbidden (not an acquirer key)' },
      404: { description: 'code_unknown (also a wrong or too old offline code)' },
      409: { description: 'code_already_redeemed, seed_exhausted' },
      410: { description: 'code_expired, seed_revoked, seed_expired' },
      422: { description: 'amount_exceeds_limit, currency_mismatch, merchant_mismatch' },
      423: { description: 'device_locked: too many wrong offline codes for the device' },
    },
  }, [requireKey('acquirer')], async (_req, res, { body }) => {
    const r = await counted('redeem', 'redeem', () => redeem(svc.redeemDeps, caller(res), body, requestIdOf(res)));
    svc.metrics.redemptions.inc({ kind: r.kind });
    res.setHeader('Cache-Control', 'no-store');
    res.json({
      redemption_id: r.redemptionId,
      kind: r.kind,
      subject: r.subject,
      amount: r.amount,
      currency: r.currency,
      merchant: r.merchant,
      code_id: r.codeId,
      seed_id: r.seedId,
      device_id: r.deviceId,
      redeemed_at: r.redeemedAt.toISOString(),
    } satisfies z.output<typeof redemptionSchema>);
  });

  const seedBody = seedBodySchema(svc.config.offline.maxCodes);
  api.route(router, {
    method: 'post', path: '/v1/offline-seeds', tag: 'offline', security: 'walletKey',
    summary: 'Wallet back end: provision an offline device seed once the user has stepped up for it (payment_code.offline_seed). The seed is returned this once.',
    body: seedBody,
    responses: { 201: { description: 'the seed', schema: provisionedSchema }, ...STEP_UP_RESPONSES },
  }, [requireKey('wallet')], async (_req, res, { body }) => {
    const owner = caller(res).id;
    assertBindableMoney(body.context.amountLimit, body.context.currency, MONEY_POINTERS);
    if (body.stepup_id === undefined) {
      await counted('offline_seed', OFFLINE_SEED_ACTION, () => svc.gate.begin({
        owner,
        action: OFFLINE_SEED_ACTION,
        subject: body.subject,
        context: seedStepUpContext(body.context, svc.seedDeps),
        bindingMessage: seedBindingMessage(body.context, svc.seedDeps),
        ...(body.redirect_uri === undefined ? {} : { redirectUri: body.redirect_uri }),
        ...(body.state === undefined ? {} : { state: body.state }),
        requestId: requestIdOf(res),
        pointerMap,
      }));
      return;
    }
    const stepupId = body.stepup_id;
    const s = await counted('offline_seed', OFFLINE_SEED_ACTION, () => provisionSeed(svc.seedDeps, { owner, subject: body.subject, stepupId, request: body.context, requestId: requestIdOf(res) }));
    svc.metrics.issued.inc({ kind: 'offline_seed' });
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json({
      seed_id: s.seedId,
      device_seed: s.deviceSeed,
      algorithm: 'TOTP-HMAC-SHA256',
      slot: s.slot,
      prefix: s.prefix,
      period_seconds: s.periodSeconds,
      digits: s.digits,
      subject: s.subject,
      device_id: s.deviceId,
      amount_limit: s.amountLimit,
      currency: s.currency,
      max_codes: s.maxCodes,
      expires_at: s.expiresAt.toISOString(),
    } satisfies z.output<typeof provisionedSchema>);
  });

  api.route(router, {
    method: 'get', path: '/v1/offline-seeds', tag: 'offline', security: 'walletKey',
    summary: 'Wallet back end: the offline seeds it provisioned for a user (gateway user id), newest first.',
    query: z.strictObject({ subject }),
    responses: { 200: { description: 'seeds (never the seed itself)', schema: z.object({ seeds: z.array(seedViewSchema) }) }, 401: { description: 'unauthorized' } },
  }, [requireKey('wallet')], async (_req, res, { query }) => {
    const seeds = await listSeeds(svc.seedDeps, { owner: caller(res).id, subject: query.subject });
    res.json({ seeds: seeds.map(seedResource) });
  });

  api.route(router, {
    method: 'post', path: '/v1/offline-seeds/:id/revoke', tag: 'offline', security: 'walletKey',
    summary: 'Wallet back end: revoke an offline seed (lost phone). Immediate: its codes are refused from now on. Idempotent.',
    responses: { 200: { description: 'the seed, revoked', schema: seedViewSchema }, 401: { description: 'unauthorized' }, 404: { description: 'seed_not_found' } },
  }, [requireKey('wallet')], async (req, res) => {
    const id = req.params.id;
    if (typeof id !== 'string' || !/^pcs_[A-Za-z0-9_-]{10,64}$/.test(id)) throw new PaymentCodeError('seed_not_found');
    res.json(seedResource(await revokeSeed(svc.seedDeps, { owner: caller(res).id, seedId: id, requestId: requestIdOf(res) })));
  });

  api.route(router, {
    method: 'get', path: '/.well-known/jwks.json', tag: 'discovery', security: 'none',
    summary: 'Public keys (Ed25519) that verify signed QR payloads, for smart terminals.',
    responses: { 200: { description: 'JWKS', schema: z.object({ keys: z.array(z.record(z.string(), z.unknown())) }) } },
  }, [], async (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.json(await svc.qrKeys.jwks());
  });

  api.route(router, {
    method: 'get', path: '/healthz', tag: 'operations', security: 'none',
    summary: 'Liveness: the process is up.',
    responses: { 200: { description: 'ok', schema: z.object({ status: z.literal('ok') }) } },
  }, [], (_req, res) => {
    res.json({ status: 'ok' });
  });

  api.route(router, {
    method: 'get', path: '/readyz', tag: 'operations', security: 'none',
    summary: 'Readiness: the database answers (and, on SQLite, no write to its file has failed).',
    responses: { 200: { description: 'ready', schema: z.object({ status: z.literal('ready') }) }, 503: { description: 'service_unavailable: the database is unreachable, or a write to the SQLite file failed (every write is refused until restart)' } },
  }, [], async (_req, res) => {
    try {
      await svc.store.ping();
    } catch (cause) {
      throw new PaymentCodeError('service_unavailable', { cause, retryAfterSeconds: 5 });
    }
    res.json({ status: 'ready' });
  });

  return router;
}
