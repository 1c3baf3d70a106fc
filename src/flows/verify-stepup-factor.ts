import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import type { FactorRecord, FactorType, VerifyOutcome } from '../factors/factor.ts';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { hashToken } from '../crypto/ids.ts';
import type { Executor, Tx } from '../store/database.ts';
import type { FactorChallengesTable, StepUpStatus, StepUpsTable } from '../store/schema.ts';
import { acrAtLeast } from '../policy/acr.ts';
import { recheckAtCompletion } from './stepup-recheck.ts';
import { rowsMeetingStepUpPolicy } from './factor-constraints.ts';
import { activeFactorRows, liveChallengeRow, toFactorRecord, toLiveChallenge } from './stepup-challenge.ts';
import { achievedAcr, effectiveStatus, type ProvenFactor, type StepUp, satisfiedAlternative, toStepUp } from '../stepup/stepup-record.ts';
import { FixedSql } from '../store/fixed-sql.ts';
import type { AuditEvent } from '../audit/audit-log.ts';
import type { Row } from '../store/primitives.ts';

/**
 * Proving one factor inside a step-up transaction (native API and the step-up page).
 *
 * Order matters: the ticket is checked, the transaction's attempt counter and the factor's
 * failure counter are both charged BEFORE the secret is compared (each with one conditional
 * UPDATE, so parallel guesses cannot exceed the limits), the factor module compares, and
 * only then is its state change applied with a guarded update. A one-time code (a factor
 * that `comparesInline`) is compared inside the charging transaction, after the charges, and
 * its outcome commits with them: one durable commit per verification.
 */

/** What a factor may ask the flow to write after a verification. */
export interface FactorStateChange {
  /** New verifier hash (password rehash). */
  secretHash?: string;
  /** New counter / last accepted time step; applied only if it moves forward (replay guard). */
  counter?: number;
  /** Replacement of the public parameters; written only if they did not change since they were read. */
  params?: Record<string, unknown>;
  /** A security event the change stands for (`factor.flagged`), audited in the same transaction. */
  audit?: { type: `factor.${string}`; data: Record<string, unknown> };
}

export interface VerifyResult {
  stepUp: StepUp;
  completed: boolean;
  /** The factor sets still possible, each minus what is already proven. */
  remaining: string[][];
}

export interface Who {
  ip?: string | null;
  requestId?: string | null;
}

// The statements every verification runs (fixed SQL, see src/store/fixed-sql.ts).
const STEPUP_BY_ID = new FixedSql<Row<'stepups'>>('select * from "stepups" where "id" = ?');
const STEPUP_BY_ID_FOR_UPDATE = new FixedSql<Row<'stepups'>>('select * from "stepups" where "id" = ? for update');
const CHARGE_ATTEMPT = new FixedSql<{ attempts: number; max_attempts: number }>(
  `update "stepups" set "attempts" = "attempts" + 1 where "id" = ? and "status" = 'pending' and "expires_at" > ? and "attempts" < "max_attempts" returning "attempts", "max_attempts"`,
);
// The same charge returning the whole row, for a verification completed in the same transaction.
const CHARGE_ATTEMPT_ROW = new FixedSql<Row<'stepups'>>(
  `update "stepups" set "attempts" = "attempts" + 1 where "id" = ? and "status" = 'pending' and "expires_at" > ? and "attempts" < "max_attempts" returning *`,
);
const CHARGE_FACTOR = new FixedSql<{ failures: number }>(
  'update "factors" set "failures" = "failures" + 1 where "id" = ? and "failures" < ? and ("locked_until" is null or "locked_until" <= ?) returning "failures"',
);

export async function loadStepUp(gw: Gateway, id: string): Promise<StepUp | undefined> {
  const row = await STEPUP_BY_ID.first(gw.store.db, [id]);
  return row === undefined ? undefined : toStepUp(row);
}

// The owner is part of the lookup, so another client's step-up is not even read (and not
// parsed): it takes the path, and about the time, of one that does not exist.
const STEPUP_BY_ID_AND_CLIENT = new FixedSql<Row<'stepups'>>('select * from "stepups" where "id" = ? and "client_id" = ?');

/** The step-up if it exists and `clientId` created it; undefined for an unknown id and for another client's alike. */
export async function loadClientStepUp(gw: Gateway, id: string, clientId: string): Promise<StepUp | undefined> {
  const row = await STEPUP_BY_ID_AND_CLIENT.first(gw.store.db, [id, clientId]);
  return row === undefined ? undefined : toStepUp(row);
}

// The ticket's hash is part of the lookup (a hash of what was presented, so comparing it in
// SQL tells a timer nothing about the ticket): for a wrong ticket no row comes back, as for an
// unknown id.
const STEPUP_BY_ID_AND_TICKET = new FixedSql<Row<'stepups'>>('select * from "stepups" where "id" = ? and "ticket_hash" = ?');

/**
 * The ticket authorises the user-side calls. Unknown id and wrong ticket look the same: the
 * same 401, and the same work (reading and parsing the row first made a wrong ticket for an
 * existing step-up measurably slower than an unknown id).
 */
export async function authorizeTicket(gw: Gateway, id: string, ticket: string | undefined): Promise<StepUp> {
  if (ticket === undefined || ticket === '') throw new AppError('invalid_ticket');
  const presented = hashToken(ticket);
  const row = await STEPUP_BY_ID_AND_TICKET.first(gw.store.db, [id, presented]);
  if (row === undefined || !constantTimeEqual(presented, row.ticket_hash)) throw new AppError('invalid_ticket');
  return toStepUp(row);
}

export function assertPending(stepUp: StepUp, now: Date): void {
  const status = effectiveStatus(stepUp, now);
  if (status === 'expired') throw new AppError('stepup_expired');
  if (status !== 'pending') throw new AppError('stepup_not_pending', { detail: `The step-up is ${status}.` });
}

export function remainingSets(stepUp: StepUp): string[][] {
  const have = new Set(stepUp.proven.map((p) => p.type));
  return stepUp.anyOf.map((set) => set.filter((t) => !have.has(t)));
}

/**
 * Charges one transaction attempt: undefined when the limit is reached (or the transaction
 * moved on); `last` when this was the final attempt the transaction allows.
 */
async function chargeAttempt(ex: Executor, stepUp: StepUp, nowMs: number): Promise<{ last: boolean } | undefined> {
  const charged = await CHARGE_ATTEMPT.first(ex, [stepUp.id, nowMs]);
  return charged === undefined ? undefined : { last: Number(charged.attempts) >= Number(charged.max_attempts) };
}

/**
 * Ends a step-up whose final attempt failed (guarded: only a pending one). Only the request
 * that spent the last attempt does this, after its own comparison — a request refused for
 * want of attempts never does, or it could deny a step-up whose last attempt, the right
 * code, is still being checked (many concurrent submissions of one code).
 */
async function denySpent(gw: Gateway, stepUp: StepUp, who: Who): Promise<void> {
  const denied = await gw.store.db.transaction().execute(async (tx) => {
    const moved = await tx.updateTable('stepups').set({ status: 'denied' }).where('id', '=', stepUp.id).where('status', '=', 'pending').returning('id').executeTakeFirst();
    if (moved !== undefined) {
      await gw.audit.append(tx, { type: 'stepup.denied', subject: stepUp.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: stepUp.id, reason: 'attempts_exhausted' } });
    }
    return moved !== undefined;
  });
  if (denied) gw.metrics.stepups.inc({ event: 'denied' });
}

/** Charges one factor failure in advance; false when the factor is locked. */
export async function chargeFactor(
  gw: Gateway,
  factorId: string,
  nowMs: number,
  lockout: { maxFailures: number; lockSeconds: number | null } = gw.config.factors,
  ex: Executor = gw.store.db,
): Promise<boolean> {
  const { maxFailures, lockSeconds } = lockout;
  const charged = await CHARGE_FACTOR.first(ex, [factorId, maxFailures, nowMs]);
  if (charged === undefined) {
    // A lock without expiry stays until reset (failures = 0), e.g. by a hardware-token resync.
    if (lockSeconds === null) return false;
    // A lock that has run out restarts the count.
    const restarted = await ex
      .updateTable('factors')
      .set({ failures: 1, locked_until: null })
      .where('id', '=', factorId)
      .where('locked_until', 'is not', null)
      .where('locked_until', '<=', nowMs)
      .returning('failures')
      .executeTakeFirst();
    return restarted !== undefined;
  }
  if (charged.failures >= maxFailures && lockSeconds !== null) {
    // The charge that reaches the limit locks the factor (a success below still unlocks it).
    await ex
      .updateTable('factors')
      .set({ locked_until: nowMs + lockSeconds * 1000 })
      .where('id', '=', factorId)
      .execute();
  }
  return true;
}

/**
 * What a failed verification still writes (a credential flagged as possibly cloned), with
 * its audit event; guarded on the parameters read, so a concurrent change is not lost.
 */
async function applyFailureChange(gw: Gateway, factorId: string, paramsBefore: string, change: FactorStateChange, who: Who & { userId: string }): Promise<void> {
  if (change.params === undefined && change.audit === undefined) return;
  await gw.store.db.transaction().execute((tx) => applyFailureChangeIn(gw, tx, factorId, paramsBefore, change, who));
}

/** applyFailureChange inside the caller's transaction. */
async function applyFailureChangeIn(gw: Gateway, tx: Tx, factorId: string, paramsBefore: string, change: FactorStateChange, who: Who & { userId: string }): Promise<void> {
  const nowMs = gw.clock.now().getTime();
  if (change.params !== undefined) {
    const written = await tx.updateTable('factors').set({ params: JSON.stringify(change.params), updated_at: nowMs }).where('id', '=', factorId).where('params', '=', paramsBefore).returning('id').executeTakeFirst();
    if (written === undefined) return;
  }
  if (change.audit !== undefined) {
    await gw.audit.append(tx, { type: change.audit.type, subject: who.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId, ...change.audit.data } });
  }
}

/**
 * The guarded success update as fixed SQL: one constant text per shape (which of secret hash,
 * counter and parameters change, and whether the parameters are guarded), built on first use
 * from the fragments below only, never from input.
 */
const SUCCESS_UPDATES = new Map<string, FixedSql<{ id: string }>>();

function successUpdate(secretHash: boolean, counter: boolean, params: boolean, paramsGuard: boolean): FixedSql<{ id: string }> {
  const shape = `${+secretHash}${+counter}${+params}${+paramsGuard}`;
  let q = SUCCESS_UPDATES.get(shape);
  if (q === undefined) {
    const set = ['"failures" = 0', '"locked_until" = null', '"last_used_at" = ?', '"updated_at" = ?'];
    if (secretHash) set.push('"secret_hash" = ?');
    if (counter) set.push('"counter" = ?');
    if (params) set.push('"params" = ?');
    // A factor disabled or removed while it was being verified does not succeed.
    const where = ['"id" = ?', `"status" = 'active'`];
    // The replay guard: a counter/time step only moves forward, so of two concurrent uses of
    // one code exactly one matches.
    if (counter) where.push('"counter" < ?');
    if (paramsGuard) where.push('"params" = ?');
    q = new FixedSql<{ id: string }>(`update "factors" set ${set.join(', ')} where ${where.join(' and ')} returning "id"`);
    SUCCESS_UPDATES.set(shape, q);
  }
  return q;
}

export async function applySuccess(tx: Tx, factorId: string, change: FactorStateChange | undefined, nowMs: number, paramsBefore?: string): Promise<boolean> {
  const secretHash = change?.secretHash;
  const counter = change?.counter;
  const params = change?.params === undefined ? undefined : JSON.stringify(change.params);
  const guardParams = params !== undefined && paramsBefore !== undefined;
  const values: unknown[] = [nowMs, nowMs];
  if (secretHash !== undefined) values.push(secretHash);
  if (counter !== undefined) values.push(counter);
  if (params !== undefined) values.push(params);
  values.push(factorId);
  if (counter !== undefined) values.push(counter);
  if (guardParams) values.push(paramsBefore);
  const updated = await successUpdate(secretHash !== undefined, counter !== undefined, params !== undefined, guardParams).first(tx, values);
  return updated !== undefined;
}

/** Charges one attempt on the live challenge; undefined when it is used up, expired or consumed. */
async function chargeChallenge(ex: Executor, id: string, nowMs: number): Promise<FactorChallengesTable | undefined> {
  return ex
    .updateTable('factor_challenges')
    .set((eb) => ({ attempts: eb('attempts', '+', 1) }))
    .where('id', '=', id)
    .where('consumed_at', 'is', null)
    .where('state', 'is not', null)
    .where('expires_at', '>', nowMs)
    .whereRef('attempts', '<', 'max_attempts')
    .returningAll()
    .executeTakeFirst();
}

// The step-up columns a completion may write; the update is fixed SQL per set of columns.
const COMPLETION_COLUMNS = new Set(['proven', 'amr', 'version', 'status', 'requirement', 'acr', 'policy_id', 'policy_version', 'token_ttl_seconds', 'max_age_seconds', 'completed_at', 'auth_time']);
const COMPLETION_UPDATES = new Map<string, FixedSql>();

/** `update "stepups" set … where "id" = ? and "version" = ?` for these columns, in this order. */
function completionUpdate(columns: string[]): FixedSql {
  const shape = columns.join(',');
  let q = COMPLETION_UPDATES.get(shape);
  if (q === undefined) {
    for (const c of columns) if (!COMPLETION_COLUMNS.has(c)) throw new TypeError(`not a step-up completion column: ${c}`);
    q = new FixedSql(`update "stepups" set ${columns.map((c) => `"${c}" = ?`).join(', ')} where "id" = ? and "version" = ?`);
    COMPLETION_UPDATES.set(shape, q);
  }
  return q;
}

/** Thrown inside the completion transaction to roll it back when a single-use thing was already used. */
class ReplayLost extends Error {}

async function completeInTransaction<R>(gw: Gateway, work: (tx: Tx) => Promise<R | undefined>): Promise<R | undefined> {
  try {
    return await gw.store.db.transaction().execute(work);
  } catch (err) {
    if (err instanceof ReplayLost) return undefined;
    throw err;
  }
}

export interface VerifyFactorInput {
  factor: FactorType;
  /** Which of the user's factors of that type (several WebAuthn credentials, say). */
  factorId?: string;
  /** The factor-specific input (password, code, credential…). */
  input: unknown;
}

export async function verifyStepUpFactor(gw: Gateway, stepUp: StepUp, request: VerifyFactorInput, who: Who): Promise<VerifyResult> {
  // A password verification takes its argon2 slot before anything is charged (or is
  // refused with 503 `overloaded`, having written nothing).
  const admit = gw.factors.get(request.factor)?.admit;
  if (admit !== undefined) return admit(() => verifyAdmitted(gw, stepUp, request, who));
  return verifyAdmitted(gw, stepUp, request, who);
}

async function verifyAdmitted(gw: Gateway, stepUp: StepUp, request: VerifyFactorInput, who: Who): Promise<VerifyResult> {
  const now = gw.clock.now();
  const nowMs = now.getTime();
  assertPending(stepUp, now);
  const allowed = remainingSets(stepUp).some((set) => set.includes(request.factor));
  const module = gw.factors.get(request.factor);
  if (!allowed || module === undefined) {
    throw new AppError('factor_not_allowed', { invalidParams: [{ pointer: '/factor', reason: 'not a factor this step-up accepts (or already proven)' }] });
  }
  // Only the factors that meet the step-up's policy (its `totp` constraints) can be used.
  const rows = await rowsMeetingStepUpPolicy(gw, stepUp, request.factor, await activeFactorRows(gw.store.db, stepUp.userId, request.factor, request.factorId));
  const isChallenge = module.startChallenge !== undefined && module.descriptor.challenge !== undefined;
  const challengeRow = isChallenge ? await liveChallengeRow(gw.store.db, stepUp.id, request.factor) : undefined;
  const peeked = challengeRow === undefined || challengeRow.consumed_at !== null || challengeRow.expires_at <= nowMs ? undefined : toLiveChallenge(challengeRow);
  if (isChallenge && peeked === undefined) {
    throw new AppError('challenge_required', { invalidParams: [{ pointer: '/factor', reason: 'start a challenge first (POST …/challenge); the last one expired or was used' }] });
  }
  const records = rows.map(toFactorRecord);
  let record: FactorRecord | undefined;
  if (module.resolveFactor !== undefined) record = module.resolveFactor(records, request.input, peeked);
  else if (records.length === 1 || request.factorId !== undefined) record = records[0];
  const row = record === undefined ? undefined : rows.find((r) => r.id === record.id);
  if (record === undefined || row === undefined) {
    throw new AppError('factor_not_allowed', {
      invalidParams: [{ pointer: request.factorId === undefined ? '/factor' : '/factorId', reason: rows.length > 1 ? 'several factors of this type: name one with factorId' : 'no such enrolled factor' }],
    });
  }

  const failedEvent = (reason: string, detail?: string): AuditEvent => ({
    type: 'stepup.factor_failed', subject: stepUp.userId, ip: who.ip ?? null, requestId: who.requestId ?? null,
    data: { stepupId: stepUp.id, factor: request.factor, factorId: row.id, reason, ...(detail === undefined ? {} : { detail }) },
  });

  /**
   * Writes a verified factor into the step-up (`current`, read under the step-up's lock):
   * the guarded success update first, then the progress, the completion re-check and the
   * audit events. Undefined, having written nothing, when the guarded update lost (the same
   * one-time code used concurrently, or the factor disabled meanwhile).
   */
  const complete = async (tx: Tx, current: Row<'stepups'>, outcome: VerifyOutcome<FactorStateChange> & { ok: true }): Promise<StepUp | undefined> => {
    const s = toStepUp(current);
    assertPending(s, now);
    if (!(await applySuccess(tx, row.id, outcome.change, nowMs, row.params))) return undefined;
    // The events of this completion, appended together at the end in this order (one chain-head
    // read and write for all of them).
    const events: AuditEvent[] = [];
    if (outcome.change?.audit !== undefined) {
      events.push({ type: outcome.change.audit.type, subject: stepUp.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId: row.id, ...outcome.change.audit.data } });
    }
    const proven: ProvenFactor[] = [...s.proven.filter((p) => p.type !== request.factor), { type: request.factor, factorId: row.id, amr: [...outcome.amr], at: nowMs, ...(outcome.acr === undefined ? {} : { acr: outcome.acr }) }];
    const amr = [...new Set(proven.flatMap((p) => p.amr))];
    if (new Set(proven.map((p) => p.type)).size >= 2) amr.push('mfa');
    let done = satisfiedAlternative(s.anyOf, proven, s.acr);
    let status: StepUpStatus = 'pending';
    let raised: Partial<StepUpsTable> = {};
    let recheckReason = 'velocity';
    if (done !== undefined) {
      const recheck = await recheckAtCompletion(gw, tx, s, proven);
      if (recheck.kind !== 'ok') recheckReason = recheck.reason;
      if (recheck.kind === 'ok') {
        status = 'completed';
        if (recheck.decision !== undefined && acrAtLeast(recheck.decision.acr, s.acr) && recheck.decision.acr !== s.acr) raised = { acr: recheck.decision.acr };
      } else if (recheck.kind === 'deny') {
        status = 'denied';
        done = undefined;
      } else {
        // Velocity moved on since creation, or the policy set changed: the user must now prove
        // more (say, the fingerprint).
        done = undefined;
        raised = {
          requirement: JSON.stringify({ anyOf: recheck.decision.satisfiable }),
          acr: recheck.decision.acr,
          policy_id: recheck.decision.policyId,
          policy_version: recheck.decision.version ?? s.policyVersion,
          token_ttl_seconds: recheck.decision.tokenTtlSeconds,
          max_age_seconds: recheck.decision.maxAgeSeconds,
        };
      }
    }
    const changes = {
      proven: JSON.stringify(proven),
      amr: JSON.stringify(amr),
      version: s.version + 1,
      status,
      ...raised,
      ...(status === 'completed' ? { completed_at: nowMs, auth_time: nowMs } : {}),
    };
    // Columns left undefined are not written (as Kysely's set() leaves them out).
    const written = Object.entries(changes).filter(([, v]) => v !== undefined);
    await completionUpdate(written.map(([c]) => c)).run(tx, [...written.map(([, v]) => v), s.id, s.version]);
    events.push({ type: 'stepup.factor_verified', subject: s.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: s.id, factor: request.factor, factorId: row.id } });
    if (status === 'completed') {
      events.push({ type: 'stepup.completed', subject: s.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: s.id, clientId: s.clientId, action: s.action, factors: done, acr: achievedAcr({ anyOf: s.anyOf, proven, acr: raised.acr ?? s.acr }) } });
    } else if (status === 'denied') {
      events.push({ type: 'stepup.denied', subject: s.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: s.id, reason: 'policy_recheck', cause: recheckReason } });
    } else if (raised.requirement !== undefined) {
      events.push({ type: 'stepup.requirement_raised', subject: s.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: s.id, policyId: raised.policy_id, acr: raised.acr, reason: recheckReason } });
    }
    await gw.audit.appendAll(tx, events);
    return toStepUp({ ...current, ...changes });
  };

  /** The comparison outside the charging transaction, then the completion in a second one. */
  const verifyThenComplete = async (challenge: FactorChallengesTable | undefined, last: boolean): Promise<StepUp | undefined> => {
    const live = challenge === undefined ? undefined : toLiveChallenge(challenge);
    const outcome = (await module.verify(record, request.input, { now, challenge: live, stepupId: stepUp.id })) as VerifyOutcome<FactorStateChange>;
    if (!outcome.ok) {
      if (outcome.change !== undefined) await applyFailureChange(gw, row.id, row.params, outcome.change, { ...who, userId: stepUp.userId });
      await gw.audit.append(gw.store.db, failedEvent(outcome.reason, outcome.detail));
      gw.metrics.stepups.inc({ event: 'factor_failed' });
      if (last) await denySpent(gw, stepUp, who);
      // One answer for every failure: never a hint about which secret was wrong or why.
      throw new AppError('factor_invalid');
    }
    return completeInTransaction(gw, async (tx) => {
      // Rows are locked in the order the charge transaction above locks them (step-up, then
      // challenge, then factor), so concurrent verifications of one step-up cannot deadlock
      // on PostgreSQL (one holding the factor and waiting for the step-up, the other the reverse).
      const current = await (gw.store.dialect === 'postgres' ? STEPUP_BY_ID_FOR_UPDATE : STEPUP_BY_ID).first(tx, [stepUp.id]);
      if (current === undefined) throw new Error(`step-up ${stepUp.id} vanished during its completion`);
      if (challenge !== undefined) {
        // The challenge is single-use: of two concurrent correct answers one consumes it.
        const consumed = await tx.updateTable('factor_challenges').set({ consumed_at: nowMs }).where('id', '=', challenge.id).where('consumed_at', 'is', null).returning('id').executeTakeFirst();
        if (consumed === undefined) throw new ReplayLost();
      }
      // Lost the guarded update (the code's step already used): undo the challenge consumption too.
      const done = await complete(tx, current, outcome);
      if (done === undefined) throw new ReplayLost();
      return done;
    });
  };

  // A factor whose comparison is a few microseconds of CPU (a one-time code: unseal, HMACs)
  // is compared inside the charging transaction, after the charges, and its outcome is
  // written by the same commit: one durable commit per verification instead of two. The
  // charges still come first, each a conditional UPDATE holding the step-up's (and the
  // factor's) lock until the commit, so parallel guesses queue and cannot exceed the limits;
  // and no answer, right or wrong, is given before the commit that holds the charge (if the
  // commit fails or the process dies, the request gets a 500 or nothing, whatever the code).
  // Slow comparisons (argon2, WebAuthn) and challenge factors keep the two transactions.
  const inline = module.descriptor.comparesInline === true && challengeRow === undefined;

  // The charges (transaction attempt, challenge attempt, factor failure in advance) commit
  // together, before the comparison: one durable commit instead of three. A charge that is
  // refused commits the ones before it with the audit event that says why.
  type Charged =
    | { kind: 'ok'; challenge: FactorChallengesTable | undefined; last: boolean }
    | { kind: 'exhausted' }
    | { kind: 'challenge_exhausted' | 'challenge_required' | 'locked' | 'invalid'; last: boolean }
    | { kind: 'verified'; result: StepUp | undefined; last: boolean };
  const charged = await gw.store.db.transaction().execute(async (tx): Promise<Charged> => {
    const attemptRow = inline ? await CHARGE_ATTEMPT_ROW.first(tx, [stepUp.id, nowMs]) : undefined;
    const attempt = inline ? (attemptRow === undefined ? undefined : { last: Number(attemptRow.attempts) >= Number(attemptRow.max_attempts) }) : await chargeAttempt(tx, stepUp, nowMs);
    if (attempt === undefined) return { kind: 'exhausted' };
    const last = attempt.last;
    const failed = (reason: string) => gw.audit.append(tx, failedEvent(reason));
    let challenge: FactorChallengesTable | undefined;
    if (challengeRow !== undefined) {
      challenge = await chargeChallenge(tx, challengeRow.id, nowMs);
      if (challenge === undefined) {
        const fresh = await liveChallengeRow(tx, stepUp.id, request.factor);
        await failed('challenge_unusable');
        return { kind: fresh !== undefined && fresh.consumed_at === null && fresh.attempts >= fresh.max_attempts ? 'challenge_exhausted' : 'challenge_required', last };
      }
    }
    if (!(await chargeFactor(gw, row.id, nowMs, module.descriptor.lockout, tx))) {
      await failed('locked');
      return { kind: 'locked', last };
    }
    if (attemptRow === undefined) return { kind: 'ok', challenge, last };
    const outcome = (await module.verify(record, request.input, { now, challenge: undefined, stepupId: stepUp.id })) as VerifyOutcome<FactorStateChange>;
    if (!outcome.ok) {
      if (outcome.change !== undefined) await applyFailureChangeIn(gw, tx, row.id, row.params, outcome.change, { ...who, userId: stepUp.userId });
      await gw.audit.append(tx, failedEvent(outcome.reason, outcome.detail));
      return { kind: 'invalid', last };
    }
    const result = await complete(tx, attemptRow, outcome);
    // The guarded state change lost (the same one-time code used concurrently): a replay.
    if (result === undefined) await failed('replayed');
    return { kind: 'verified', result, last };
  });
  if (charged.kind === 'exhausted') {
    // Every attempt is spent (the request that spent the last one denies the step-up if it
    // fails), or the step-up moved on for another reason, which its status then says.
    const fresh = await loadStepUp(gw, stepUp.id);
    if (fresh !== undefined && fresh.attempts < fresh.maxAttempts) assertPending(fresh, now);
    throw new AppError('attempts_exhausted');
  }
  if (charged.kind === 'invalid' || (charged.kind === 'verified' && charged.result === undefined)) {
    gw.metrics.stepups.inc({ event: 'factor_failed' });
    if (charged.last) await denySpent(gw, stepUp, who);
    // One answer for every failure: never a hint about which secret was wrong or why.
    throw new AppError('factor_invalid');
  }
  if (charged.kind !== 'ok' && charged.kind !== 'verified') {
    gw.metrics.stepups.inc({ event: 'factor_failed' });
    if (charged.last) await denySpent(gw, stepUp, who);
    if (charged.kind === 'challenge_exhausted') throw new AppError('challenge_attempts_exhausted');
    if (charged.kind === 'challenge_required') throw new AppError('challenge_required');
    throw new AppError('factor_locked');
  }
  const result = charged.kind === 'verified' ? charged.result : await verifyThenComplete(charged.challenge, charged.last);
  if (result === undefined) {
    gw.metrics.stepups.inc({ event: 'factor_failed' });
    await gw.audit.append(gw.store.db, failedEvent('replayed'));
    if (charged.last) await denySpent(gw, stepUp, who);
    throw new AppError('factor_invalid');
  }
  const completed = result.status === 'completed';
  if (completed) gw.metrics.stepups.inc({ event: 'completed' });
  if (result.status === 'pending' && charged.last) {
    // One factor of several proven with the final attempt: the rest can never be proven.
    await denySpent(gw, stepUp, who);
    throw new AppError('attempts_exhausted');
  }
  if (result.status === 'denied') {
    gw.metrics.stepups.inc({ event: 'denied' });
    throw new AppError('access_denied', { detail: 'No policy allows this action any more.' });
  }
  return { stepUp: result, completed, remaining: remainingSets(result) };
}
