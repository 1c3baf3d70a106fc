import type { Gateway } from '../gateway.ts';
import { AppError, type InvalidParam } from '../errors/app-error.ts';
import {
  checkTotpCode,
  newTotpSecret,
  openTotpSecret,
  otpauthUri,
  parseTotpParams,
  qrImages,
  sealTotpSecret,
  type QrImages,
  type TotpParams,
} from '../factors/totp/index.ts';
import { base32Encode, type OtpAlgorithm } from '../otp/index.ts';
import type { FactorsTable } from '../store/schema.ts';
import { activatePendingFactor, checkLabel, type FactorView, insertPendingFactor, pendingFactor, toFactorView } from './factors.ts';
import { getUser, type AuditActor } from './users.ts';

/**
 * Enrolling an authenticator app: a fresh secret in a pending factor, shown once as an
 * otpauth:// URI, a QR code and base32 text; the factor becomes active only when the user
 * types a first code, and that code's time step is stored as the last accepted step, so the
 * same code cannot then be used for a step-up. A user has one authenticator app: confirming a
 * new one replaces the old one in the same transaction (serialised per user across
 * processes). Wrong confirmation codes are counted before comparison; after
 * `totp.confirmMaxAttempts` the enrolment is dead and must be started again.
 */

export const DEFAULT_TOTP_LABEL = 'Authenticator app';

export interface StartTotpEnrolmentInput {
  label?: string | undefined;
  algorithm?: OtpAlgorithm | undefined;
  digits?: number | undefined;
  periodSeconds?: number | undefined;
}

export interface TotpEnrolmentMaterial {
  factorId: string;
  label: string;
  params: TotpParams;
  /** Base32, for typing into an app by hand. */
  secret: string;
  uri: string;
  qr: QrImages;
  expiresAt: Date;
}

/** The parameters asked for, each checked against the configured allowed values. */
function chooseParams(gw: Gateway, input: StartTotpEnrolmentInput): TotpParams {
  const c = gw.config.totp;
  const problems: InvalidParam[] = [];
  const algorithm = input.algorithm ?? c.algorithm;
  const digits = input.digits ?? c.digits;
  const period = input.periodSeconds ?? c.periodSeconds;
  if (!(c.allowedAlgorithms as readonly string[]).includes(algorithm)) problems.push({ pointer: '/algorithm', reason: `must be one of ${c.allowedAlgorithms.join(', ')}` });
  if (!(c.allowedDigits as readonly number[]).includes(digits)) problems.push({ pointer: '/digits', reason: `must be one of ${c.allowedDigits.join(', ')}` });
  if (!(c.allowedPeriods as readonly number[]).includes(period)) problems.push({ pointer: '/periodSeconds', reason: `must be one of ${c.allowedPeriods.join(', ')}` });
  if (problems.length > 0) throw new AppError('validation_failed', { invalidParams: problems });
  return { algorithm, digits: digits as 6 | 8, period: period as 30 | 60 };
}

async function material(gw: Gateway, row: Pick<FactorsTable, 'id' | 'user_id' | 'label' | 'secret_sealed' | 'params' | 'created_at'>, secret: Buffer, params: TotpParams): Promise<TotpEnrolmentMaterial> {
  const user = await getUser(gw, row.user_id);
  const uri = otpauthUri({ issuer: gw.config.totp.issuer, accountName: user?.username ?? row.user_id, secret, params });
  return {
    factorId: row.id,
    label: row.label,
    params,
    secret: base32Encode(secret),
    uri,
    qr: await qrImages(uri),
    expiresAt: new Date(row.created_at + gw.config.factors.pendingSeconds * 1000),
  };
}

export async function startTotpEnrolment(gw: Gateway, userId: string, input: StartTotpEnrolmentInput, who: AuditActor): Promise<TotpEnrolmentMaterial> {
  const params = chooseParams(gw, input);
  const label = checkLabel(input.label ?? DEFAULT_TOTP_LABEL);
  const secret = newTotpSecret(params, gw.config.totp.secretBytes);
  try {
    const row = await gw.store.db.transaction().execute(async (tx) => {
      const id = await insertPendingFactor(gw, tx, { userId, type: 'totp', label, params: { ...params } });
      // The seal is bound to the row id, which exists only now.
      const sealed = sealTotpSecret(gw.sealer, id, secret);
      await tx.updateTable('factors').set({ secret_sealed: sealed }).where('id', '=', id).execute();
      await gw.audit.append(tx, { type: 'factor.enrolment_started', actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId: id, factorType: 'totp', ...params } });
      return tx.selectFrom('factors').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    });
    return await material(gw, row, secret, params);
  } finally {
    secret.fill(0);
  }
}

/** The QR code and secret of an enrolment in progress again (the confirmation page after a typo). */
export async function pendingTotpMaterial(gw: Gateway, userId: string, factorId: string): Promise<TotpEnrolmentMaterial> {
  const row = await pendingFactor(gw, gw.store.db, userId, factorId, 'totp');
  const params = parseTotpParams(JSON.parse(row.params) as Record<string, unknown>);
  if (params === undefined || row.secret_sealed === null) throw new AppError('not_found', { detail: 'No such enrolment in progress.' });
  const key = openTotpSecret(gw.sealer, { id: row.id, secretSealed: row.secret_sealed });
  const secret = key.export();
  try {
    return await material(gw, row, secret, params);
  } finally {
    secret.fill(0);
  }
}

/** Charges one confirmation attempt before the comparison; false when they are used up. */
async function chargeConfirmation(gw: Gateway, factorId: string): Promise<boolean> {
  const charged = await gw.store.db
    .updateTable('factors')
    .set((eb) => ({ failures: eb('failures', '+', 1) }))
    .where('id', '=', factorId)
    .where('status', '=', 'pending')
    .where('failures', '<', gw.config.totp.confirmMaxAttempts)
    .returning('failures')
    .executeTakeFirst();
  return charged !== undefined;
}

export async function confirmTotpEnrolment(gw: Gateway, userId: string, factorId: string, code: string, who: AuditActor): Promise<FactorView> {
  const now = gw.clock.now();
  const row = await pendingFactor(gw, gw.store.db, userId, factorId, 'totp');
  const params = parseTotpParams(JSON.parse(row.params) as Record<string, unknown>);
  if (params === undefined || row.secret_sealed === null) throw new AppError('not_found', { detail: 'No such enrolment in progress.' });
  const audit = (type: string, data: Record<string, unknown>) =>
    gw.audit.append(gw.store.db, { type, actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId, factorType: 'totp', ...data } });

  if (!(await chargeConfirmation(gw, factorId))) {
    // The row stays (unusable) until it expires or a new start replaces it: deleting it here
    // would race with a correct confirmation charged just before.
    await audit('factor.enrolment_failed', { reason: 'attempts_exhausted' });
    throw new AppError('enrolment_attempts_exhausted');
  }
  const key = openTotpSecret(gw.sealer, { id: row.id, secretSealed: row.secret_sealed });
  const check = checkTotpCode(key, params, code, now, gw.config.totp.windowSteps, 0);
  if (!check.ok) {
    await audit('factor.enrolment_failed', { reason: 'invalid_code' });
    throw new AppError('factor_invalid', { detail: 'That code did not match. Check the time on your phone and type the code the app shows now.', invalidParams: [{ pointer: '/code', reason: 'not the current code of this authenticator' }] });
  }

  const nowMs = now.getTime();
  return gw.store.db.transaction().execute(async (tx) => {
    // One authenticator app per user: the new one replaces the old one. Locking the user's
    // TOTP rows first serialises two confirmations across processes (SQLite serialises
    // write transactions anyway) and keeps the lock order of a step-up completion, which
    // also touches the factor row before anything else.
    const rows = await tx
      .selectFrom('factors')
      .select(['id', 'status'])
      .where('user_id', '=', userId)
      .where('type', '=', 'totp')
      .orderBy('id')
      .$if(gw.store.dialect === 'postgres', (q) => q.forUpdate())
      .execute();
    for (const old of rows.filter((r) => r.status === 'active' && r.id !== factorId)) {
      await tx.deleteFrom('factors').where('id', '=', old.id).execute();
      await gw.audit.append(tx, { type: 'factor.removed', actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId: old.id, factorType: 'totp', reason: 'replaced', replacedBy: factorId } });
    }
    // The confirmation code's step becomes the last accepted step: it can never be used again.
    if (!(await activatePendingFactor(gw, tx, userId, factorId, { counter: check.step }, who))) {
      throw new AppError('conflict', { detail: 'This enrolment was already confirmed or discarded.' });
    }
    await tx.updateTable('factors').set({ failures: 0 }).where('id', '=', factorId).execute();
    const active = await tx.selectFrom('factors').selectAll().where('id', '=', factorId).executeTakeFirstOrThrow();
    return toFactorView(active, nowMs);
  });
}
