import { type KeyObject, randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { VerifierClock } from '../verifier/index.ts';
import type { ApiKeyCaller } from './api-keys.ts';
import { parseCode } from './code-format.ts';
import { amountAtMost, assertComparableAmount, assertCurrency } from './decimal.ts';
import { PaymentCodeError } from './errors.ts';
import type { EventLog } from './events.ts';
import { codeHmac } from './issue-code.ts';
import { seedAad } from './offline-seeds.ts';
import { matchOfflineOtp, seedKey } from './offline-otp.ts';
import type { PaymentCodeSealer } from './sealer.ts';
import { looksLikeQrPayload, verifyQr } from './signed-qr.ts';
import type { QrKeyRing } from './signing-keys.ts';
import { type PhaseObserver, timed } from './step-up.ts';
import type { PcDb } from './store/database.ts';
import type { CodesTable, OfflineSeedsTable, RedemptionKind } from './store/schema.ts';

/**
 * Redemption, the acquirer / POS side: a code (18 digits from a barcode or QR, or a signed
 * QR payload) resolves to the payer exactly once. Checks that do not consume anything come
 * first (unknown, expired, currency, payee, amount), so a refused attempt leaves a good code
 * usable; the consuming write is one conditional UPDATE (or INSERT) whose WHERE clause
 * re-checks state, so of any number of concurrent redemptions — in any number of processes
 * on one database — exactly one wins.
 */
export interface RedeemDeps {
  db: PcDb;
  events: EventLog;
  clock: VerifierClock;
  sealer: PaymentCodeSealer;
  qrKeys: QrKeyRing;
  codeIndexKey: KeyObject;
  prefix: string;
  publicUrl: string;
  maxFailures: number;
  failureWindowSeconds: number;
  observe: PhaseObserver;
}

export interface RedeemRequest {
  code: string;
  amount: string;
  currency?: string | undefined;
  merchant: string;
}

export interface Redemption {
  redemptionId: string;
  kind: RedemptionKind;
  subject: string;
  amount: string;
  currency: string;
  merchant: string;
  codeId: string | null;
  seedId: string | null;
  deviceId: string;
  redeemedAt: Date;
}

function checkTerms(request: RedeemRequest, terms: { amountLimit: string; currency: string; payee: string | null }): void {
  if (request.currency !== undefined && request.currency !== terms.currency) {
    throw new PaymentCodeError('currency_mismatch', { invalidParams: [{ pointer: '/currency', reason: 'differs from the authorised currency' }] });
  }
  if (terms.payee !== null && request.merchant !== terms.payee) {
    throw new PaymentCodeError('merchant_mismatch', { invalidParams: [{ pointer: '/merchant', reason: 'the payer authorised another payee' }] });
  }
  // "99.999" CNY is no amount that can be charged: refused, never rounded to fit the limit.
  assertComparableAmount(request.amount, terms.currency, '/amount');
  if (!amountAtMost(request.amount, terms.amountLimit)) {
    throw new PaymentCodeError('amount_exceeds_limit', { invalidParams: [{ pointer: '/amount', reason: 'above the authorised limit' }] });
  }
}

export async function redeem(d: RedeemDeps, acquirer: ApiKeyCaller, request: RedeemRequest, requestId?: string): Promise<Redemption> {
  if (request.currency !== undefined) assertCurrency(request.currency, '/currency');
  return timed(d.observe, 'redeem', () => redeemAny(d, acquirer, request, requestId));
}

async function redeemAny(d: RedeemDeps, acquirer: ApiKeyCaller, request: RedeemRequest, requestId?: string): Promise<Redemption> {
  if (looksLikeQrPayload(request.code)) {
    const claims = await verifyQr(d.qrKeys, d.publicUrl, request.code, d.clock);
    const row = await d.db.selectFrom('pc_codes').selectAll().where('qr_nonce', '=', claims.jti).executeTakeFirst();
    if (row === undefined) throw new PaymentCodeError('code_unknown');
    return redeemOnline(d, acquirer, request, row, 'signed_qr', requestId);
  }
  const parsed = parseCode(request.code, d.prefix);
  if (parsed === undefined) throw new PaymentCodeError('code_unknown');
  if (parsed.kind === 'offline') return redeemOffline(d, acquirer, request, parsed.slot, parsed.otp, requestId);
  const live = await d.db.selectFrom('pc_live_codes').select(['code_id']).where('code_hmac', '=', codeHmac(d.codeIndexKey, parsed.digits)).executeTakeFirst();
  const row = live === undefined ? undefined : await d.db.selectFrom('pc_codes').selectAll().where('id', '=', live.code_id).executeTakeFirst();
  if (row === undefined) throw new PaymentCodeError('code_unknown');
  return redeemOnline(d, acquirer, request, row, 'online', requestId);
}

async function redeemOnline(d: RedeemDeps, acquirer: ApiKeyCaller, request: RedeemRequest, row: CodesTable, kind: RedemptionKind, requestId?: string): Promise<Redemption> {
  const now = d.clock.now();
  const nowMs = now.getTime();
  if (row.status === 'redeemed') throw new PaymentCodeError('code_already_redeemed');
  if (row.expires_at <= nowMs) throw new PaymentCodeError('code_expired');
  checkTerms(request, { amountLimit: row.amount_limit, currency: row.currency, payee: row.payee });
  const redemptionId = `red_${randomBytes(16).toString('base64url')}`;
  const won = await d.db.transaction().execute(async (tx) => {
    const consumed = await tx
      .updateTable('pc_codes')
      .set({ status: 'redeemed', redeemed_at: nowMs, redemption_id: redemptionId })
      .where('id', '=', row.id)
      .where('status', '=', 'issued')
      .where('expires_at', '>', nowMs)
      .executeTakeFirst();
    if (Number(consumed.numUpdatedRows) !== 1) return false;
    // The value may be drawn again from now on.
    await tx.updateTable('pc_live_codes').set({ expires_at: nowMs }).where('code_hmac', '=', row.code_hmac).where('code_id', '=', row.id).execute();
    await tx
      .insertInto('pc_redemptions')
      .values({ id: redemptionId, kind, code_id: row.id, seed_id: null, subject: row.subject, amount: request.amount, currency: row.currency, merchant: request.merchant, acquirer_key_id: acquirer.id, redeemed_at: nowMs })
      .execute();
    await d.events.append(tx, {
      type: 'code.redeemed',
      actor: acquirer.id,
      subject: row.subject,
      requestId: requestId ?? null,
      data: { redemptionId, codeId: row.id, kind, amount: request.amount, currency: row.currency, merchant: request.merchant },
    });
    return true;
  });
  if (!won) {
    const fresh = await d.db.selectFrom('pc_codes').select(['status']).where('id', '=', row.id).executeTakeFirst();
    throw new PaymentCodeError(fresh?.status === 'redeemed' ? 'code_already_redeemed' : 'code_expired');
  }
  return { redemptionId, kind, subject: row.subject, amount: request.amount, currency: row.currency, merchant: request.merchant, codeId: row.id, seedId: null, deviceId: row.device_id, redeemedAt: now };
}

function seedRefusal(seed: Pick<OfflineSeedsTable, 'revoked_at' | 'expires_at' | 'codes_used' | 'max_codes'>, nowMs: number): PaymentCodeError | undefined {
  if (seed.revoked_at !== null) return new PaymentCodeError('seed_revoked');
  if (seed.expires_at <= nowMs) return new PaymentCodeError('seed_expired');
  if (seed.codes_used >= seed.max_codes) return new PaymentCodeError('seed_exhausted');
  return undefined;
}

async function redeemOffline(d: RedeemDeps, acquirer: ApiKeyCaller, request: RedeemRequest, slot: string, otp: string, requestId?: string): Promise<Redemption> {
  const now = d.clock.now();
  const nowMs = now.getTime();
  const owner = await d.db.selectFrom('pc_device_slots').select(['seed_id']).where('slot', '=', slot).executeTakeFirst();
  const seed = owner === undefined ? undefined : await d.db.selectFrom('pc_offline_seeds').selectAll().where('id', '=', owner.seed_id).executeTakeFirst();
  if (seed === undefined) throw new PaymentCodeError('code_unknown');
  const refused = seedRefusal(seed, nowMs);
  if (refused !== undefined) throw refused;

  // Count the attempt before comparing: at most maxFailures guesses per device per window,
  // however many arrive in parallel. A success below clears the count.
  const window = Math.floor(nowMs / 1000 / d.failureWindowSeconds);
  const charged = await d.db
    .updateTable('pc_offline_seeds')
    .set({
      failures: sql<number>`case when failure_window = ${window} then failures + 1 else 1 end`,
      failure_window: window,
    })
    .where('id', '=', seed.id)
    .where((eb) => eb.or([eb('failure_window', '<>', window), eb('failures', '<', d.maxFailures)]))
    .executeTakeFirst();
  if (Number(charged.numUpdatedRows) !== 1) throw new PaymentCodeError('device_locked', { retryAfterSeconds: d.failureWindowSeconds - (Math.floor(nowMs / 1000) % d.failureWindowSeconds) });

  const step = matchOfflineOtp(seedKey(d.sealer.unseal(seed.seed_sealed, seedAad(seed.id))), otp, now, seed.period_seconds);
  // Too old, too new and wrong are one answer: an old code is simply not a code any more.
  if (step === undefined) throw new PaymentCodeError('code_unknown');
  checkTerms(request, { amountLimit: seed.amount_limit, currency: seed.currency, payee: null });

  const redemptionId = `red_${randomBytes(16).toString('base64url')}`;
  await d.db.transaction().execute(async (tx) => {
    const first = await tx
      .insertInto('pc_offline_uses')
      .values({ seed_id: seed.id, step, redemption_id: redemptionId, used_at: nowMs })
      .onConflict((oc) => oc.columns(['seed_id', 'step']).doNothing())
      .executeTakeFirst();
    if (Number(first.numInsertedOrUpdatedRows ?? 0) !== 1) throw new PaymentCodeError('code_already_redeemed');
    // Revocation, expiry and the cap are re-checked in the counting statement itself.
    const counted = await tx
      .updateTable('pc_offline_seeds')
      .set((eb) => ({ codes_used: eb('codes_used', '+', 1), failures: 0 }))
      .where('id', '=', seed.id)
      .where('revoked_at', 'is', null)
      .where('expires_at', '>', nowMs)
      .where((eb) => eb('codes_used', '<', eb.ref('max_codes')))
      .executeTakeFirst();
    if (Number(counted.numUpdatedRows) !== 1) {
      const fresh = await tx.selectFrom('pc_offline_seeds').selectAll().where('id', '=', seed.id).executeTakeFirstOrThrow();
      throw seedRefusal(fresh, nowMs) ?? new PaymentCodeError('seed_exhausted');
    }
    await tx
      .insertInto('pc_redemptions')
      .values({ id: redemptionId, kind: 'offline', code_id: null, seed_id: seed.id, subject: seed.subject, amount: request.amount, currency: seed.currency, merchant: request.merchant, acquirer_key_id: acquirer.id, redeemed_at: nowMs })
      .execute();
    await d.events.append(tx, {
      type: 'offline_code.redeemed',
      actor: acquirer.id,
      subject: seed.subject,
      requestId: requestId ?? null,
      data: { redemptionId, seedId: seed.id, step, amount: request.amount, currency: seed.currency, merchant: request.merchant },
    });
  });
  return { redemptionId, kind: 'offline', subject: seed.subject, amount: request.amount, currency: seed.currency, merchant: request.merchant, codeId: null, seedId: seed.id, deviceId: seed.device_id, redeemedAt: now };
}
