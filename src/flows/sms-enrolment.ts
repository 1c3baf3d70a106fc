import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import type { Factor } from '../factors/factor.ts';
import { generateSmsCode, smsCodeMac, smsCodeMatches, type SmsOtpParams } from '../factors/sms-otp/index.ts';
import { enrolmentSummary, maskPhoneNumber, parseMobileNumber, renderSmsText, smsLocaleOf } from '../sms/index.ts';
import { consumeOnce } from '../store/primitives.ts';
import type { SmsEnrolmentCodesTable } from '../store/schema.ts';
import { deliverSms, smsSenderOf } from './deliver-sms.ts';
import { activatePendingFactor, checkLabel, type FactorView, insertPendingFactor, lockUserForEnrolment, pendingFactor, toFactorView } from './factors.ts';
import { smsCodeKey } from './sms-otp.ts';
import type { AuditActor } from './users.ts';

/**
 * Enrolling a phone for SMS codes: the number is validated (E.164, mobile, allowed
 * region), kept as a pending factor, and becomes a factor only when the user types the code
 * sent to it — ownership proven. Like a step-up challenge: the attempt is charged before the
 * comparison, a resend keeps the attempt count and respects the cooldown, a failed send
 * leaves no usable code, and the code is consumed once together with the activation.
 * Changing a number is a new enrolment (then remove the old phone).
 */

export interface StartedSmsEnrolment {
  factorId: string;
  destination: string;
  expiresInSeconds: number;
  resendAfterSeconds: number;
}

/** Thrown inside the confirmation transaction to roll it back when the code was used concurrently. */
class AlreadyUsed extends Error {}

function assertSmsAvailable(gw: Gateway): void {
  if (smsSenderOf(gw) === undefined || !gw.factors.has('sms_otp')) {
    throw new AppError('sms_unavailable', { retryAfterSeconds: gw.config.sms.unavailableRetryAfterSeconds, detail: 'SMS codes are not available on this installation.' });
  }
}

function phoneProblem(problem: 'format' | 'not_mobile'): AppError {
  return new AppError('phone_invalid', {
    invalidParams: [{ pointer: '/phone', reason: problem === 'format' ? 'not a valid phone number: use +<country code><number>' : 'not a mobile number: SMS codes need a mobile phone' }],
  });
}

/** Sends a fresh code for the enrolment row (already reserved) and stores its MAC; on failure nothing usable remains. */
async function sendEnrolmentCode(gw: Gateway, row: SmsEnrolmentCodesTable, phone: string, locale: string, reservedSends: number): Promise<number> {
  const { sms } = gw.config;
  const lang = smsLocaleOf(locale);
  const code = generateSmsCode();
  const summary = enrolmentSummary(lang);
  const minutes = Math.max(1, Math.round(sms.codeTtlSeconds / 60));
  try {
    await deliverSms(gw, {
      userId: row.user_id,
      to: phone,
      locale: lang,
      purpose: 'enrolment',
      text: renderSmsText({ brand: sms.brand, locale: lang, purpose: 'enrolment', code, summary, minutes }),
      variables: { code, summary, minutes: String(minutes) },
      validitySeconds: sms.codeTtlSeconds,
      ref: { factorId: row.factor_id },
    });
  } catch (err) {
    // No code may stay usable (not even the previous one) and the send slot is given back.
    await gw.store.db
      .updateTable('sms_enrolment_codes')
      .set({ code_mac: null, last_sent_at: 0, sends: Math.max(0, reservedSends - 1) })
      .where('factor_id', '=', row.factor_id)
      .where('consumed_at', 'is', null)
      .execute();
    throw err;
  }
  const expiresAt = gw.clock.now().getTime() + sms.codeTtlSeconds * 1000;
  await gw.store.db
    .updateTable('sms_enrolment_codes')
    .set({ code_mac: smsCodeMac(smsCodeKey(gw), { purpose: 'enrolment', factorId: row.factor_id, userId: row.user_id }, code), expires_at: expiresAt })
    .where('factor_id', '=', row.factor_id)
    .where('consumed_at', 'is', null)
    .execute();
  return expiresAt;
}

export async function startSmsEnrolment(gw: Gateway, userId: string, input: { phone: string; label?: string | undefined }, locale: string, who: AuditActor): Promise<StartedSmsEnrolment> {
  assertSmsAvailable(gw);
  const { sms } = gw.config;
  const parsed = parseMobileNumber(input.phone, sms.defaultRegion);
  if (typeof parsed === 'string') throw phoneProblem(parsed);
  if (!sms.allowedRegions.includes(parsed.region)) {
    throw new AppError('sms_region_not_allowed', { invalidParams: [{ pointer: '/phone', reason: `numbers in ${parsed.region} cannot receive codes here` }] });
  }
  const masked = maskPhoneNumber(parsed.e164);
  const label = input.label === undefined || input.label.trim() === '' ? masked : checkLabel(input.label);
  const params: SmsOtpParams = { phone: parsed.e164, phoneMasked: masked, country: parsed.region, callingCode: parsed.callingCode };
  const nowMs = gw.clock.now().getTime();
  const row = await gw.store.db.transaction().execute(async (tx) => {
    // With the user locked, as insertPendingFactor does: a phone confirmed by a parallel
    // enrolment is seen here, so one number is never enrolled twice.
    await lockUserForEnrolment(gw, tx, userId);
    const enrolled = await tx.selectFrom('factors').select('params').where('user_id', '=', userId).where('type', '=', 'sms_otp').where('status', '=', 'active').execute();
    if (enrolled.some((f) => (JSON.parse(f.params) as Partial<SmsOtpParams>).phone === parsed.e164)) {
      throw new AppError('conflict', { detail: 'This phone is already enrolled.', invalidParams: [{ pointer: '/phone', reason: 'already enrolled' }] });
    }
    const factorId = await insertPendingFactor(gw, tx, { userId, type: 'sms_otp', label, params: { ...params } });
    const values: SmsEnrolmentCodesTable = { factor_id: factorId, user_id: userId, code_mac: null, attempts: 0, max_attempts: sms.maxAttempts, sends: 1, last_sent_at: nowMs, expires_at: nowMs, consumed_at: null };
    await tx.insertInto('sms_enrolment_codes').values(values).execute();
    return values;
  });
  let expiresAt: number;
  try {
    expiresAt = await sendEnrolmentCode(gw, row, parsed.e164, locale, 1);
  } catch (err) {
    // The first code never left: there is nothing to confirm, so no enrolment either.
    await gw.store.db.deleteFrom('factors').where('id', '=', row.factor_id).where('status', '=', 'pending').execute();
    throw err;
  }
  await gw.audit.append(gw.store.db, {
    type: 'factor.enrolment_started',
    actor: who.actor,
    subject: userId,
    ip: who.ip ?? null,
    requestId: who.requestId ?? null,
    data: { factorId: row.factor_id, factorType: 'sms_otp', phone: masked },
  });
  return { factorId: row.factor_id, destination: masked, expiresInSeconds: Math.round((expiresAt - nowMs) / 1000), resendAfterSeconds: sms.resendCooldownSeconds };
}

async function enrolmentCodeRow(gw: Gateway, factorId: string): Promise<SmsEnrolmentCodesTable> {
  const row = await gw.store.db.selectFrom('sms_enrolment_codes').selectAll().where('factor_id', '=', factorId).executeTakeFirst();
  if (row === undefined) throw new AppError('not_found', { detail: 'No such enrolment in progress (it may have expired: start again).' });
  return row;
}

export async function resendSmsEnrolmentCode(gw: Gateway, userId: string, factorId: string, locale: string, who: AuditActor): Promise<StartedSmsEnrolment> {
  assertSmsAvailable(gw);
  const { sms } = gw.config;
  const factor = await pendingFactor(gw, gw.store.db, userId, factorId, 'sms_otp');
  const phone = (JSON.parse(factor.params) as Partial<SmsOtpParams>).phone;
  if (typeof phone !== 'string') throw new AppError('not_found');
  const existing = await enrolmentCodeRow(gw, factorId);
  const nowMs = gw.clock.now().getTime();
  if (existing.consumed_at !== null) throw new AppError('conflict', { detail: 'This phone is already confirmed.' });
  if (existing.attempts >= existing.max_attempts) throw new AppError('challenge_attempts_exhausted', { detail: 'Too many wrong codes: start the enrolment again.' });
  if (existing.sends >= sms.maxSends) throw new AppError('challenge_attempts_exhausted', { detail: 'No more codes can be sent for this enrolment: start again later.' });
  const wait = existing.last_sent_at + sms.resendCooldownSeconds * 1000 - nowMs;
  if (existing.last_sent_at !== 0 && wait > 0) throw new AppError('challenge_cooldown', { retryAfterSeconds: Math.ceil(wait / 1000) });
  // Reserve the send with one conditional write: of two concurrent "resend" clicks one sends.
  const reserved = await gw.store.db
    .updateTable('sms_enrolment_codes')
    .set((eb) => ({ sends: eb('sends', '+', 1), last_sent_at: nowMs }))
    .where('factor_id', '=', factorId)
    .where('consumed_at', 'is', null)
    .where('sends', '=', existing.sends)
    .where('last_sent_at', '=', existing.last_sent_at)
    .returningAll()
    .executeTakeFirst();
  if (reserved === undefined) throw new AppError('challenge_cooldown', { retryAfterSeconds: sms.resendCooldownSeconds });
  const expiresAt = await sendEnrolmentCode(gw, reserved, phone, locale, reserved.sends);
  await gw.audit.append(gw.store.db, {
    type: 'factor.enrolment_code_resent',
    actor: who.actor,
    subject: userId,
    ip: who.ip ?? null,
    requestId: who.requestId ?? null,
    data: { factorId, factorType: 'sms_otp', send: reserved.sends },
  });
  return { factorId, destination: maskPhoneNumber(phone), expiresInSeconds: Math.round((expiresAt - nowMs) / 1000), resendAfterSeconds: sms.resendCooldownSeconds };
}

export async function confirmSmsEnrolment(gw: Gateway, userId: string, factorId: string, code: string, who: AuditActor): Promise<FactorView> {
  assertSmsAvailable(gw);
  await pendingFactor(gw, gw.store.db, userId, factorId, 'sms_otp');
  const now = gw.clock.now();
  const nowMs = now.getTime();
  const audit = (type: string, data: Record<string, unknown>) =>
    gw.audit.append(gw.store.db, { type, actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId, factorType: 'sms_otp', ...data } });
  // The attempt is charged before the comparison: parallel guesses cannot exceed the limit.
  const charged = await gw.store.db
    .updateTable('sms_enrolment_codes')
    .set((eb) => ({ attempts: eb('attempts', '+', 1) }))
    .where('factor_id', '=', factorId)
    .where('user_id', '=', userId)
    .where('consumed_at', 'is', null)
    .where('code_mac', 'is not', null)
    .where('expires_at', '>', nowMs)
    .whereRef('attempts', '<', 'max_attempts')
    .returningAll()
    .executeTakeFirst();
  if (charged === undefined) {
    const row = await enrolmentCodeRow(gw, factorId);
    await audit('factor.enrolment_failed', { reason: row.attempts >= row.max_attempts ? 'attempts_exhausted' : 'no_live_code' });
    if (row.consumed_at === null && row.attempts >= row.max_attempts) throw new AppError('challenge_attempts_exhausted', { detail: 'Too many wrong codes: start the enrolment again.' });
    throw new AppError('challenge_required', { detail: 'The code expired (or none was sent): ask for a new one.' });
  }
  if (!smsCodeMatches(smsCodeKey(gw), { purpose: 'enrolment', factorId, userId }, code, charged.code_mac)) {
    await audit('factor.enrolment_failed', { reason: 'invalid' });
    throw new AppError('factor_invalid');
  }
  let activated: boolean;
  try {
    activated = await gw.store.db.transaction().execute(async (tx) => {
      const used = await consumeOnce(tx, { table: 'sms_enrolment_codes', match: { factor_id: factorId }, now, usedColumn: 'consumed_at', expiresColumn: 'expires_at' });
      if (!used) throw new AlreadyUsed();
      if (!(await activatePendingFactor(gw, tx, userId, factorId, {}, who))) throw new AlreadyUsed();
      return true;
    });
  } catch (err) {
    if (!(err instanceof AlreadyUsed)) throw err;
    activated = false;
  }
  if (!activated) {
    await audit('factor.enrolment_failed', { reason: 'replayed' });
    throw new AppError('factor_invalid');
  }
  const row = await gw.store.db.selectFrom('factors').selectAll().where('id', '=', factorId).executeTakeFirstOrThrow();
  return toFactorView(row, nowMs);
}

/** For the pages: whether SMS enrolment is offered at all. */
export function smsEnrolmentAvailable(gw: Gateway): boolean {
  return smsSenderOf(gw) !== undefined && (gw.factors.get('sms_otp') as Factor | undefined) !== undefined;
}
