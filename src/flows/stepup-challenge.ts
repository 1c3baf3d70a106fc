import type { Gateway } from '../gateway.ts';
import { AppError, isAppError } from '../errors/app-error.ts';
import type { ChallengeLimits, Factor, FactorRecord, FactorType, LiveChallenge } from '../factors/factor.ts';
import { newId } from '../crypto/ids.ts';
import type { Executor } from '../store/database.ts';
import type { FactorChallengesTable, FactorsTable } from '../store/schema.ts';
import type { StepUp } from '../stepup/stepup-record.ts';
import { assertPending, remainingSets, type Who } from './verify-stepup-factor.ts';
import { FixedSql } from '../store/fixed-sql.ts';

/**
 * Starting a challenge factor inside a step-up (send the SMS, issue WebAuthn options).
 *
 * The flow owns the challenge's life: one row per step-up and factor type; the send slot
 * is reserved with one conditional write BEFORE the factor sends anything (two concurrent
 * "resend" clicks send once); a resend replaces the state but never the attempt count; a
 * failed send leaves no usable state behind; success consumes the row once (see
 * verify-stepup-factor.ts).
 */

export interface StartChallengeInput {
  factor: FactorType;
  factorId?: string;
  /** The user's language for what is sent ('en' | 'zh-CN'). */
  locale: string;
}

export interface StartedChallenge {
  factor: FactorType;
  factorId: string | null;
  expiresInSeconds: number;
  resendAfterSeconds: number;
  publicData: Record<string, unknown>;
}

export function toFactorRecord(row: FactorsTable): FactorRecord {
  return {
    id: row.id,
    userId: row.user_id,
    type: row.type,
    label: row.label,
    status: row.status,
    secretHash: row.secret_hash,
    secretSealed: row.secret_sealed,
    params: JSON.parse(row.params) as Record<string, unknown>,
    counter: row.counter,
  };
}

export function toLiveChallenge(row: FactorChallengesTable): LiveChallenge | undefined {
  if (row.state === null) return undefined;
  return {
    state: JSON.parse(row.state) as Record<string, unknown>,
    factorId: row.factor_id,
    createdAt: new Date(row.created_at),
    expiresAt: new Date(row.expires_at),
  };
}

export function challengeLimits(module: Factor): ChallengeLimits {
  const limits = module.descriptor.challenge;
  if (module.startChallenge === undefined || limits === undefined) throw new TypeError(`factor ${module.type} has no challenge`);
  return limits;
}

/** The user's active factors of one type (one, when `factorId` names it). */
export async function activeFactorRows(executor: Executor, userId: string, type: string, factorId?: string): Promise<FactorsTable[]> {
  const { rows } = factorId === undefined ? await ACTIVE_FACTORS.run(executor, [userId, type]) : await ACTIVE_FACTOR.run(executor, [userId, type, factorId]);
  return rows;
}

// Every verification and challenge reads the user's factors of one type (fixed SQL). On
// SQLite the index is named: a bound value compared with a partial index's condition
// (factors_one_recovery_code_set, `type = 'recovery_code'`, migration 020) makes SQLite
// compile the statement again each time the value is bound, to see whether that index
// applies — ~18 µs a run instead of ~8 on the bench machine. PostgreSQL plans without it.
// (With the factor id given, the primary key is the plan and the cost does not arise.)
const ACTIVE_FACTORS_SQL = `select * from "factors" where "user_id" = ? and "type" = ? and "status" = 'active' order by "created_at"`;
const ACTIVE_FACTORS = new FixedSql<FactorsTable>(ACTIVE_FACTORS_SQL.replace('from "factors"', 'from "factors" indexed by "factors_user_type"'), { postgres: ACTIVE_FACTORS_SQL });
const ACTIVE_FACTOR = new FixedSql<FactorsTable>(`select * from "factors" where "user_id" = ? and "type" = ? and "status" = 'active' and "id" = ? order by "created_at"`);

export async function liveChallengeRow(executor: Executor, stepupId: string, type: string): Promise<FactorChallengesTable | undefined> {
  return executor.selectFrom('factor_challenges').selectAll().where('stepup_id', '=', stepupId).where('factor_type', '=', type).executeTakeFirst();
}

/**
 * Reserves the right to send: a fresh row, or an existing unconsumed one whose cooldown has
 * passed and whose sends and attempts are not used up. Exactly one concurrent caller wins.
 */
async function reserveSend(gw: Gateway, stepUp: StepUp, type: FactorType, limits: ChallengeLimits, nowMs: number): Promise<{ row: FactorChallengesTable; fresh: boolean }> {
  const existing = await liveChallengeRow(gw.store.db, stepUp.id, type);
  const cooldownMs = limits.resendCooldownSeconds * 1000;
  if (existing === undefined) {
    const id = newId('chl');
    const inserted = await gw.store.db
      .insertInto('factor_challenges')
      .values({
        id,
        stepup_id: stepUp.id,
        factor_type: type,
        factor_id: null,
        state: null,
        attempts: 0,
        max_attempts: limits.maxAttempts,
        sends: 1,
        created_at: nowMs,
        last_sent_at: nowMs,
        expires_at: nowMs,
      })
      .onConflict((oc) => oc.columns(['stepup_id', 'factor_type']).doNothing())
      .returningAll()
      .executeTakeFirst();
    if (inserted !== undefined) return { row: inserted, fresh: true };
    // Someone else started it at this very moment: that is a send within the cooldown.
    throw new AppError('challenge_cooldown', { retryAfterSeconds: limits.resendCooldownSeconds });
  }
  if (existing.consumed_at !== null) throw new AppError('stepup_not_pending', { detail: 'This factor is already proven.' });
  if (existing.attempts >= existing.max_attempts) throw new AppError('challenge_attempts_exhausted');
  if (existing.sends >= limits.maxSends) throw new AppError('challenge_attempts_exhausted', { detail: 'No more challenges can be sent for this step-up.' });
  const wait = existing.last_sent_at + cooldownMs - nowMs;
  // last_sent_at 0 marks a failed send (free to retry at once); a send in progress or done
  // holds the cooldown.
  if (existing.last_sent_at !== 0 && wait > 0) throw new AppError('challenge_cooldown', { retryAfterSeconds: Math.ceil(wait / 1000) });
  const reserved = await gw.store.db
    .updateTable('factor_challenges')
    .set((eb) => ({ sends: eb('sends', '+', 1), last_sent_at: nowMs }))
    .where('id', '=', existing.id)
    .where('consumed_at', 'is', null)
    .where('sends', '=', existing.sends)
    .where('last_sent_at', '=', existing.last_sent_at)
    .returningAll()
    .executeTakeFirst();
  if (reserved === undefined) throw new AppError('challenge_cooldown', { retryAfterSeconds: limits.resendCooldownSeconds });
  return { row: reserved, fresh: false };
}

export async function startStepUpChallenge(gw: Gateway, stepUp: StepUp, request: StartChallengeInput, who: Who): Promise<StartedChallenge> {
  const now = gw.clock.now();
  const nowMs = now.getTime();
  assertPending(stepUp, now);
  const module = gw.factors.get(request.factor);
  const allowed = remainingSets(stepUp).some((set) => set.includes(request.factor));
  if (!allowed || module === undefined || module.startChallenge === undefined || module.descriptor.challenge === undefined) {
    throw new AppError('factor_not_allowed', { invalidParams: [{ pointer: '/factor', reason: 'not a challenge factor this step-up accepts (or already proven)' }] });
  }
  const limits = challengeLimits(module);
  const rows = await activeFactorRows(gw.store.db, stepUp.userId, request.factor, request.factorId);
  if (rows.length === 0) {
    throw new AppError('factor_not_allowed', { invalidParams: [{ pointer: request.factorId === undefined ? '/factor' : '/factorId', reason: 'no such enrolled factor' }] });
  }
  const { row, fresh } = await reserveSend(gw, stepUp, request.factor, limits, nowMs);
  const previous = row.state === null ? undefined : (JSON.parse(row.state) as Record<string, unknown>);
  let started: Awaited<ReturnType<NonNullable<Factor['startChallenge']>>>;
  try {
    started = await module.startChallenge(rows.map(toFactorRecord), {
      now,
      userId: stepUp.userId,
      locale: request.locale,
      purpose: { kind: 'stepup', stepupId: stepUp.id, clientId: stepUp.clientId, action: stepUp.action, context: stepUp.context, bindingMessage: stepUp.bindingMessage, acr: stepUp.acr },
      previous,
    });
  } catch (err) {
    // Nothing was sent: leave nothing usable (not even the previous code) and give the send
    // slot back so the user can try again at once. Attempts stay charged.
    await gw.store.db
      .updateTable('factor_challenges')
      .set({ state: null, last_sent_at: 0, sends: fresh ? 0 : row.sends - 1 })
      .where('id', '=', row.id)
      .where('consumed_at', 'is', null)
      .execute();
    await gw.audit.append(gw.store.db, {
      type: 'stepup.challenge_failed',
      subject: stepUp.userId,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { stepupId: stepUp.id, factor: request.factor, reason: isAppError(err) ? err.code : 'error' },
    });
    if (isAppError(err)) throw err;
    gw.logger.error({ err, factor: request.factor }, 'challenge start failed');
    throw new AppError('service_unavailable', { retryAfterSeconds: 30, detail: 'The challenge could not be sent.' });
  }
  // A challenge never outlives its step-up.
  const expiresAt = Math.min(nowMs + limits.ttlSeconds * 1000, stepUp.expiresAt.getTime());
  await gw.store.db
    .updateTable('factor_challenges')
    .set({ state: JSON.stringify(started.state), factor_id: started.factorId ?? null, created_at: nowMs, expires_at: expiresAt })
    .where('id', '=', row.id)
    .where('consumed_at', 'is', null)
    .execute();
  await gw.audit.append(gw.store.db, {
    type: 'stepup.challenge_sent',
    subject: stepUp.userId,
    ip: who.ip ?? null,
    requestId: who.requestId ?? null,
    data: { stepupId: stepUp.id, factor: request.factor, factorId: started.factorId ?? null, send: fresh ? 1 : row.sends },
  });
  gw.metrics.stepups.inc({ event: 'challenge_sent' });
  return {
    factor: request.factor,
    factorId: started.factorId ?? null,
    expiresInSeconds: Math.max(0, Math.round((expiresAt - nowMs) / 1000)),
    resendAfterSeconds: limits.resendCooldownSeconds,
    publicData: started.publicData,
  };
}
