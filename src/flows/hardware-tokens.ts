import { createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { AppError } from '../errors/app-error.ts';
import { factorSeedAad, type HardwareOtpParams, parseHardwareOtpParams, tokenChallengeKey, unsealFactorSeed, withBindingChallenge, withinValidity } from '../factors/hardware-otp/index.ts';
import type { Gateway } from '../gateway.ts';
import { normaliseOtpInput } from '../otp/code-input.ts';
import { bindingChallenge, matchConsecutiveCodes, matchTokenCode, stepUpChallenge, type TokenCodeParams, type TokenMatch, type TokenWindow } from '../otp/token-codes.ts';
import { normaliseSerial } from '../pskc/token-spec.ts';
import type { Executor, Tx } from '../store/database.ts';
import type { FactorsTable, HardwareTokensTable, HardwareTokenState } from '../store/schema.ts';
import { activatePendingFactor, checkLabel, insertPendingFactor, MAX_LABEL_LENGTH, onFactorRemoved } from './factors.ts';
import { tokenSeedAad } from './hardware-token-import.ts';
import { type AuditActor, normaliseUsername } from './users.ts';

/**
 * The hardware-token lifecycle (DESIGN.md §2, docs/hardware-tokens.md):
 *
 *   unassigned ──assign / bind (serial + a current code)──► assigned ──► unassigned (unassign)
 *        │                                                    │
 *        └──────────────► lost | revoked (final, seed wiped) ◄─┘
 *
 * While assigned, the token is ALSO a row in `factors` (type hardware_otp) holding a copy of
 * the seed sealed for that row, its counter / last step, drift and failure count: that row
 * is what step-up verifies, with the flow's guarded counter update as the replay guard.
 * Leaving `assigned` deletes that row in the same transaction (copying counter and drift
 * back), so a lost, revoked or unassigned token is unusable at once: a verification already
 * in flight finds no row to advance and fails. "locked" is the factor at its failure limit;
 * a resync (two consecutive codes) unlocks it.
 */

export type TokenStateView = HardwareTokenState | 'locked';

export interface TokenView {
  id: string;
  serial: string;
  manufacturer: string;
  model: string;
  kind: 'hotp' | 'totp';
  algorithm: string;
  digits: number;
  periodSeconds: number;
  state: TokenStateView;
  userId: string | null;
  username: string | null;
  factorId: string | null;
  importId: string;
  driftSteps: number;
  failures: number;
  /** Failed resynchronisations in a row (reset by a success or when a resync lock runs out). */
  resyncFailures: number;
  /** Until when resynchronisation is refused after too many failures; null when it is not. */
  resyncLockedUntil: Date | null;
  validFrom: Date | null;
  validUntil: Date | null;
  createdAt: Date;
  updatedAt: Date;
  assignedAt: Date | null;
  lastUsedAt: Date | null;
}

/** Who acts, and in which capacity (for the audit log). */
export interface TokenActor extends AuditActor {
  /** `helpdesk` (an operator acting for a user, with a reason) or `self` (the user). */
  by: 'helpdesk' | 'self';
}

const date = (ms: number | null | undefined): Date | null => (ms === null || ms === undefined ? null : new Date(Number(ms)));

function auditOf(who: AuditActor) {
  return { actor: who.actor, ip: who.ip ?? null, requestId: who.requestId ?? null };
}

function windows(gw: Gateway): { normal: TokenWindow; sync: TokenWindow } {
  const c = gw.config.hardwareTokens;
  return { normal: { lookAhead: c.lookAhead, steps: c.timeWindowSteps }, sync: { lookAhead: c.syncLookAhead, steps: c.syncWindowSteps } };
}

function isLocked(gw: Gateway, failures: number | null | undefined, lockedUntil: number | null | undefined, nowMs: number): boolean {
  const { maxFailures, lockSeconds } = gw.config.hardwareTokens;
  if (failures === null || failures === undefined || Number(failures) < maxFailures) return false;
  return lockSeconds === 0 || (lockedUntil !== null && lockedUntil !== undefined && Number(lockedUntil) > nowMs);
}

/**
 * How to check a code of an inventory token here (binding, assignment, resync): a
 * challenge-response token is asked for the binding challenge, there being no step-up.
 */
function codeParams(row: Pick<HardwareTokensTable, 'kind' | 'algorithm' | 'digits' | 'period_seconds' | 'challenge_length'>): TokenCodeParams {
  return {
    kind: row.kind,
    algorithm: row.algorithm as TokenCodeParams['algorithm'],
    digits: Number(row.digits),
    periodSeconds: Number(row.period_seconds),
    ...(row.challenge_length === null ? {} : { challenge: bindingChallenge(Number(row.challenge_length)) }),
  };
}

function factorParams(row: HardwareTokensTable, driftSteps: number): HardwareOtpParams {
  return {
    tokenId: row.id,
    serial: row.serial,
    kind: row.kind,
    algorithm: row.algorithm as TokenCodeParams['algorithm'],
    digits: Number(row.digits),
    periodSeconds: Number(row.period_seconds),
    challengeLength: row.challenge_length === null ? null : Number(row.challenge_length),
    driftSteps,
    validFrom: row.valid_from === null ? null : Number(row.valid_from),
    validUntil: row.valid_until === null ? null : Number(row.valid_until),
  };
}

function inventoryKey(gw: Gateway, row: HardwareTokensTable): KeyObject {
  if (row.seed_sealed === null) throw new AppError('token_state_conflict', { detail: `Token ${row.serial} is ${row.state}.` });
  const raw = gw.sealer.unseal(row.seed_sealed, tokenSeedAad(row.id));
  try {
    return createSecretKey(raw);
  } finally {
    raw.fill(0);
  }
}

// ---- reading -----------------------------------------------------------------------------

function baseQuery(ex: Executor) {
  return ex
    .selectFrom('hardware_tokens as t')
    .leftJoin('factors as f', 'f.id', 't.factor_id')
    .leftJoin('users as u', 'u.id', 't.user_id')
    .selectAll('t')
    .select(['f.failures as f_failures', 'f.locked_until as f_locked_until', 'f.last_used_at as f_last_used_at', 'f.params as f_params', 'u.username as username']);
}

type JoinedRow = HardwareTokensTable & { f_failures: number | null; f_locked_until: number | null; f_last_used_at: number | null; f_params: string | null; username: string | null };

/** A lock that has run out is shown as none, with no failures: the next attempt starts the count again. */
function resyncView(r: Pick<HardwareTokensTable, 'resync_failures' | 'resync_locked_until'>, nowMs: number): Pick<TokenView, 'resyncFailures' | 'resyncLockedUntil'> {
  const until = r.resync_locked_until === null ? null : Number(r.resync_locked_until);
  if (until !== null && until <= nowMs) return { resyncFailures: 0, resyncLockedUntil: null };
  return { resyncFailures: Number(r.resync_failures ?? 0), resyncLockedUntil: until === null ? null : new Date(until) };
}

function toView(gw: Gateway, r: JoinedRow, nowMs: number): TokenView {
  const fp = r.f_params === null ? undefined : parseHardwareOtpParams(JSON.parse(r.f_params) as Record<string, unknown>);
  const state: TokenStateView = r.state === 'assigned' && isLocked(gw, r.f_failures, r.f_locked_until, nowMs) ? 'locked' : r.state;
  return {
    id: r.id,
    serial: r.serial,
    manufacturer: r.manufacturer,
    model: r.model,
    kind: r.kind,
    algorithm: r.algorithm,
    digits: Number(r.digits),
    periodSeconds: Number(r.period_seconds),
    state,
    userId: r.user_id,
    username: r.username,
    factorId: r.factor_id,
    importId: r.import_id,
    driftSteps: fp?.driftSteps ?? Number(r.drift_steps),
    failures: Number(r.f_failures ?? 0),
    ...resyncView(r, nowMs),
    validFrom: date(r.valid_from),
    validUntil: date(r.valid_until),
    createdAt: new Date(Number(r.created_at)),
    updatedAt: new Date(Number(r.updated_at)),
    assignedAt: date(r.assigned_at),
    lastUsedAt: date(r.f_last_used_at),
  };
}

export interface TokenFilter {
  /** Serial, or the start of one (normalised like serials are). */
  serial?: string | undefined;
  state?: TokenStateView | undefined;
  userId?: string | undefined;
  username?: string | undefined;
  importId?: string | undefined;
  limit: number;
  offset: number;
}

/** The inventory, by serial; filters combine. */
export async function listTokens(gw: Gateway, filter: TokenFilter): Promise<{ tokens: TokenView[]; hasMore: boolean }> {
  const nowMs = gw.clock.now().getTime();
  const { maxFailures, lockSeconds } = gw.config.hardwareTokens;
  let q = baseQuery(gw.store.db);
  if (filter.serial !== undefined && filter.serial !== '') {
    const prefix = filter.serial.trim().replace(/\s+/g, '').toUpperCase();
    // substr, not LIKE: `_` is a LIKE wildcard and serials may contain it.
    q = q.where(sql<string>`substr(t.serial, 1, ${prefix.length})`, '=', prefix);
  }
  if (filter.userId !== undefined) q = q.where('t.user_id', '=', filter.userId);
  if (filter.username !== undefined) q = q.where('u.username', '=', normaliseUsername(filter.username));
  if (filter.importId !== undefined) q = q.where('t.import_id', '=', filter.importId);
  if (filter.state !== undefined) {
    const locked = sql<boolean>`(f.failures >= ${maxFailures} and ${lockSeconds === 0 ? sql`1 = 1` : sql`f.locked_until > ${nowMs}`})`;
    if (filter.state === 'locked') q = q.where('t.state', '=', 'assigned').where(locked);
    else if (filter.state === 'assigned') q = q.where('t.state', '=', 'assigned').where((eb) => eb.or([eb('f.id', 'is', null), eb.not(locked)]));
    else q = q.where('t.state', '=', filter.state);
  }
  const rows = (await q.orderBy('t.serial').limit(filter.limit + 1).offset(filter.offset).execute()) as JoinedRow[];
  return { tokens: rows.slice(0, filter.limit).map((r) => toView(gw, r, nowMs)), hasMore: rows.length > filter.limit };
}

function serialOrThrow(serial: string): string {
  const s = normaliseSerial(serial);
  if (s === undefined) throw new AppError('token_not_found', { invalidParams: [{ pointer: '/serial', reason: 'not a serial number' }] });
  return s;
}

export async function getToken(gw: Gateway, serial: string): Promise<TokenView> {
  const row = (await baseQuery(gw.store.db).where('t.serial', '=', serialOrThrow(serial)).executeTakeFirst()) as JoinedRow | undefined;
  if (row === undefined) throw new AppError('token_not_found');
  return toView(gw, row, gw.clock.now().getTime());
}

async function lockedToken(gw: Gateway, tx: Executor, serial: string): Promise<HardwareTokensTable | undefined> {
  return tx
    .selectFrom('hardware_tokens')
    .selectAll()
    .where('serial', '=', serial)
    .$if(gw.store.dialect === 'postgres', (q) => q.forUpdate())
    .executeTakeFirst();
}

async function requireToken(gw: Gateway, tx: Executor, serial: string): Promise<HardwareTokensTable> {
  const row = await lockedToken(gw, tx, serialOrThrow(serial));
  if (row === undefined) throw new AppError('token_not_found');
  return row;
}

function stateConflict(row: HardwareTokensTable, wanted: string): AppError {
  return new AppError('token_state_conflict', { detail: `Token ${row.serial} is ${row.state}; ${wanted}.` });
}

// ---- state changes (inside one transaction each) -----------------------------------------

/**
 * unassigned → assigned: the user's factor row is created through the framework's
 * pending → active enrolment (per-type limit, `factor.enrolled`), then the inventory row
 * moves with one guarded update. Any failure rolls the whole transaction back.
 */
async function assignInTx(gw: Gateway, tx: Tx, row: HardwareTokensTable, userId: string, match: TokenMatch, who: TokenActor, reason: string | undefined, label?: string): Promise<string> {
  const nowMs = gw.clock.now().getTime();
  if (row.seed_sealed === null) throw stateConflict(row, 'it cannot be assigned');
  const params = factorParams(row, match.next.driftSteps);
  const factorId = await insertPendingFactor(gw, tx, {
    userId,
    type: 'hardware_otp',
    label: label ?? `${row.manufacturer === '' ? 'Token' : row.manufacturer} ${row.serial}`.slice(0, MAX_LABEL_LENGTH),
    // tokenType/period only for listings (flows/factors.ts shows them); verification reads the rest.
    params: { ...params, tokenType: row.kind === 'hotp' ? 'event' : 'time', ...(row.kind === 'totp' ? { period: Number(row.period_seconds) } : {}) },
    counter: match.next.counter,
  });
  // The seed copy is sealed for the factor row (its id is part of the associated data).
  const seed = gw.sealer.unseal(row.seed_sealed, tokenSeedAad(row.id));
  try {
    await tx.updateTable('factors').set({ secret_sealed: gw.sealer.seal(seed, factorSeedAad(factorId)) }).where('id', '=', factorId).execute();
  } finally {
    seed.fill(0);
  }
  const moved = await tx
    .updateTable('hardware_tokens')
    .set({ state: 'assigned', user_id: userId, factor_id: factorId, counter: match.next.counter, drift_steps: match.next.driftSteps, bind_failures: 0, assign_failures: 0, assign_locked_until: null, assigned_at: nowMs, updated_at: nowMs })
    .where('id', '=', row.id)
    .where('state', '=', 'unassigned')
    // The code was checked against this counter: a concurrent bind or resync that moved it wins.
    .where('counter', '=', row.counter)
    .returning('id')
    .executeTakeFirst();
  if (moved === undefined) throw new AppError('token_state_conflict', { detail: `Token ${row.serial} changed while it was being assigned; try again.` });
  if (!(await activatePendingFactor(gw, tx, userId, factorId, {}, who))) throw new AppError('token_state_conflict', { detail: 'The enrolment was replaced meanwhile; try again.' });
  const data = { tokenId: row.id, serial: row.serial, factorId, by: who.by, ...(reason === undefined ? {} : { reason }) };
  await gw.audit.append(tx, { ...auditOf(who), type: 'hardware_token.assigned', subject: userId, data });
  return factorId;
}

/** Copies an assigned token's live state (counter, drift) from its factor row back to the inventory. */
function liveState(row: HardwareTokensTable, factor: Pick<FactorsTable, 'counter' | 'params'> | undefined): { counter: number; drift: number } {
  let counter = Number(row.counter);
  let drift = Number(row.drift_steps);
  if (factor !== undefined) {
    counter = Math.max(counter, Number(factor.counter));
    drift = parseHardwareOtpParams(JSON.parse(factor.params) as Record<string, unknown>)?.driftSteps ?? drift;
  }
  return { counter, drift };
}

/**
 * assigned | unassigned → unassigned | lost | revoked. The factor row (if any) is deleted
 * after its counter and drift are copied back, so the token can never go back in time.
 */
async function releaseInTx(gw: Gateway, tx: Tx, row: HardwareTokensTable, to: 'unassigned' | 'lost' | 'revoked', who: TokenActor, reason: string): Promise<void> {
  const nowMs = gw.clock.now().getTime();
  let factor: Pick<FactorsTable, 'counter' | 'params' | 'user_id'> | undefined;
  if (row.factor_id !== null) {
    factor = await tx
      .selectFrom('factors')
      .select(['counter', 'params', 'user_id'])
      .where('id', '=', row.factor_id)
      .$if(gw.store.dialect === 'postgres', (q) => q.forUpdate())
      .executeTakeFirst();
    if (factor !== undefined) {
      await tx.deleteFrom('factors').where('id', '=', row.factor_id).execute();
      await gw.audit.append(tx, { ...auditOf(who), type: 'factor.removed', subject: factor.user_id, data: { factorId: row.factor_id, factorType: 'hardware_otp', reason: to === 'unassigned' ? 'token_unassigned' : `token_${to}` } });
    }
  }
  const { counter, drift } = liveState(row, factor);
  const moved = await tx
    .updateTable('hardware_tokens')
    .set({
      state: to,
      user_id: null,
      factor_id: null,
      counter,
      drift_steps: drift,
      updated_at: nowMs,
      assigned_at: null,
      bind_failures: 0,
      // A final state needs no seed; wiping it means a lost token's seed cannot leak later.
      ...(to === 'unassigned' ? {} : { seed_sealed: null }),
    })
    .where('id', '=', row.id)
    .where('state', '=', row.state)
    .returning('id')
    .executeTakeFirst();
  if (moved === undefined) throw new AppError('token_state_conflict', { detail: `Token ${row.serial} changed meanwhile; try again.` });
  const type = to === 'unassigned' ? 'hardware_token.unassigned' : to === 'lost' ? 'hardware_token.reported_lost' : 'hardware_token.revoked';
  await gw.audit.append(tx, { ...auditOf(who), type, subject: row.user_id, data: { tokenId: row.id, serial: row.serial, from: row.state, by: who.by, reason } });
}

async function requireActiveUser(ex: Executor, userId: string): Promise<void> {
  const user = await ex.selectFrom('users').select(['id', 'status']).where('id', '=', userId).executeTakeFirst();
  if (user === undefined) throw new AppError('not_found', { detail: 'No such user.', invalidParams: [{ pointer: '/user_id', reason: 'no such user' }] });
  if (user.status !== 'active') throw new AppError('conflict', { detail: 'The user is disabled.', invalidParams: [{ pointer: '/user_id', reason: 'disabled' }] });
}

/** The code(s) read from an unassigned token in hand, against its inventory counter. */
function matchInventory(gw: Gateway, row: HardwareTokensTable, code: string, nextCode: string | undefined): TokenMatch | undefined {
  const now = gw.clock.now();
  if (!withinValidity({ validFrom: row.valid_from === null ? null : Number(row.valid_from), validUntil: row.valid_until === null ? null : Number(row.valid_until) }, now)) return undefined;
  const key = inventoryKey(gw, row);
  const state = { counter: Number(row.counter), driftSteps: Number(row.drift_steps) };
  const w = windows(gw);
  const [first, second] = [normaliseOtpInput(code), nextCode === undefined ? undefined : normaliseOtpInput(nextCode)];
  return second === undefined ? matchTokenCode(key, codeParams(row), state, first, now, w.normal) : matchConsecutiveCodes(key, codeParams(row), state, first, second, now, w.sync);
}

/** Counts a bind/assign attempt against the token BEFORE its code is compared. */
async function chargeBindAttempt(gw: Gateway, tokenId: string, limit: number | undefined, ex: Executor = gw.store.db): Promise<boolean> {
  let q = ex
    .updateTable('hardware_tokens')
    .set((eb) => ({ bind_failures: eb('bind_failures', '+', 1) }))
    .where('id', '=', tokenId)
    .where('state', '=', 'unassigned');
  if (limit !== undefined) q = q.where('bind_failures', '<', limit);
  return (await q.returning('id').executeTakeFirst()) !== undefined;
}

// ---- helpdesk / admin --------------------------------------------------------------------

export interface AssignInput {
  serial: string;
  userId: string;
  /** A code the token shows now. */
  code: string;
  /** The next code as well: searched in the wide sync window (a token pressed in the drawer). */
  nextCode?: string | undefined;
  reason: string;
}

/** Helpdesk binds a token in hand to a user: the current code proves it is that token and it works. */
export async function assignToken(gw: Gateway, who: TokenActor, input: AssignInput): Promise<TokenView> {
  const serial = serialOrThrow(input.serial);
  await requireActiveUser(gw.store.db, input.userId);
  const row = await requireToken(gw, gw.store.db, serial);
  if (row.state !== 'unassigned') throw stateConflict(row, 'only an unassigned token can be assigned');
  const match = await checkAssignCode(gw, who, row, input.userId, input.code, input.nextCode, 'not a current code of this token');
  await gw.store.db.transaction().execute(async (tx) => {
    const fresh = await requireToken(gw, tx, serial);
    if (fresh.state !== 'unassigned' || fresh.counter !== row.counter) throw stateConflict(fresh, 'it changed while being assigned');
    await assignInTx(gw, tx, fresh, input.userId, match, who, input.reason);
  });
  await refundOperatorAttempt(gw, operatorKey(who));
  return getToken(gw, serial);
}

/** The operator's count is keyed by the audit actor (an account id; the CLI's actor names itself). */
const operatorKey = (who: AuditActor): string => who.actor ?? 'anonymous';

type AssignCharge = { failures: number; operatorFailures: number } | { scope: 'token' | 'operator'; retryAfterSeconds: number };

/**
 * Charges one helpdesk assign/replace attempt BEFORE the code is compared: against the acting
 * operator first (hardwareTokens.assignActorMaxFailures), then against the token
 * (assignMaxFailures), each one conditional UPDATE, so parallel attempts — in any gateway
 * process — never compare more than either limit. An attempt refused by the token's limit
 * still counts against the operator (a refused attempt counts against every budget it falls
 * under); one refused by the operator's limit does not touch the token's. At a limit without
 * a lock time (the attempt that reached it is still being compared, or its process stopped)
 * the lock starts now, so it always runs out.
 */
async function chargeAssignAttempt(gw: Gateway, actor: string, tokenId: string, nowMs: number): Promise<AssignCharge> {
  const { assignMaxFailures: limit, assignActorMaxFailures: operatorLimit, assignLockSeconds } = gw.config.hardwareTokens;
  const lockMs = assignLockSeconds * 1000;
  const db = gw.store.db;
  const wait = (until: number | null | undefined) => Math.max(1, Math.ceil(((until === null || until === undefined ? nowMs + lockMs : Number(until)) - nowMs) / 1000));

  await db.insertInto('hardware_token_assign_throttle').values({ actor, failures: 0, locked_until: null, last_charged_at: nowMs }).onConflict((oc) => oc.column('actor').doNothing()).execute();
  // A lock that ran out, or a count not charged for a lock period, starts again.
  await db
    .updateTable('hardware_token_assign_throttle')
    .set({ failures: 0, locked_until: null })
    .where('actor', '=', actor)
    .where((eb) => eb.or([eb('locked_until', '<=', nowMs), eb.and([eb('locked_until', 'is', null), eb('last_charged_at', '<=', nowMs - lockMs)])]))
    .execute();
  const op = await db
    .updateTable('hardware_token_assign_throttle')
    .set((eb) => ({ failures: eb('failures', '+', 1), last_charged_at: nowMs }))
    .where('actor', '=', actor)
    .where('failures', '<', operatorLimit)
    .where('locked_until', 'is', null)
    .returning('failures')
    .executeTakeFirst();
  if (op === undefined) {
    await db.updateTable('hardware_token_assign_throttle').set({ locked_until: nowMs + lockMs }).where('actor', '=', actor).where('locked_until', 'is', null).execute();
    const r = await db.selectFrom('hardware_token_assign_throttle').select('locked_until').where('actor', '=', actor).executeTakeFirst();
    return { scope: 'operator', retryAfterSeconds: wait(r?.locked_until) };
  }

  await db.updateTable('hardware_tokens').set({ assign_failures: 0, assign_locked_until: null }).where('id', '=', tokenId).where('assign_locked_until', '<=', nowMs).execute();
  const token = await db
    .updateTable('hardware_tokens')
    .set((eb) => ({ assign_failures: eb('assign_failures', '+', 1) }))
    .where('id', '=', tokenId)
    .where('assign_failures', '<', limit)
    .where('assign_locked_until', 'is', null)
    .returning('assign_failures')
    .executeTakeFirst();
  if (token === undefined) {
    await db.updateTable('hardware_tokens').set({ assign_locked_until: nowMs + lockMs }).where('id', '=', tokenId).where('assign_locked_until', 'is', null).execute();
    const r = await db.selectFrom('hardware_tokens').select('assign_locked_until').where('id', '=', tokenId).executeTakeFirst();
    return { scope: 'token', retryAfterSeconds: wait(r?.assign_locked_until) };
  }
  return { failures: Number(token.assign_failures), operatorFailures: Number(op.failures) };
}

/**
 * A right code gives back the operator's charge for it (and lifts a lock only the charges of
 * right codes in flight had reached): the count is of wrong codes, and one right code does
 * not wipe the wrong ones before it. The token's count is cleared by the assignment itself.
 */
async function refundOperatorAttempt(gw: Gateway, actor: string): Promise<void> {
  await gw.store.db
    .updateTable('hardware_token_assign_throttle')
    .set((eb) => ({ failures: eb('failures', '-', 1), locked_until: null }))
    .where('actor', '=', actor)
    .where('failures', '>', 0)
    .execute();
}

/**
 * The helpdesk's code for an unassigned token (assign, and the new token of a replace): the
 * attempt is charged first (chargeAssignAttempt), then compared. Every failure is audited
 * with both counts; the failure that reaches a limit starts that lock (`.assign_locked`),
 * and an attempt refused at a limit is audited `.assign_refused` and answered 429.
 */
async function checkAssignCode(gw: Gateway, who: TokenActor, row: HardwareTokensTable, userId: string, code: string, nextCode: string | undefined, reason: string): Promise<TokenMatch> {
  const nowMs = gw.clock.now().getTime();
  const { assignMaxFailures: limit, assignActorMaxFailures: operatorLimit, assignLockSeconds } = gw.config.hardwareTokens;
  const base = { tokenId: row.id, serial: row.serial, by: who.by };
  const charge = await chargeAssignAttempt(gw, operatorKey(who), row.id, nowMs);
  if ('retryAfterSeconds' in charge) {
    await gw.audit.append(gw.store.db, { ...auditOf(who), type: 'hardware_token.assign_refused', subject: userId, data: { ...base, reason: 'too_many_failures', scope: charge.scope } });
    const detail = charge.scope === 'token' ? 'Too many wrong codes for this token; try again later.' : 'Too many wrong token codes from this account; try again later.';
    throw new AppError('too_many_requests', { detail, retryAfterSeconds: charge.retryAfterSeconds });
  }
  // Counted towards the self-service per-serial budget as well, as before (not limited here).
  await chargeBindAttempt(gw, row.id, undefined);
  const match = matchInventory(gw, row, code, nextCode);
  if (match !== undefined) return match;
  await gw.audit.append(gw.store.db, { ...auditOf(who), type: 'hardware_token.assign_failed', subject: userId, data: { ...base, failures: charge.failures, limit, operatorFailures: charge.operatorFailures, operatorLimit } });
  const lockedUntil = nowMs + assignLockSeconds * 1000;
  // Exactly one attempt is charged each limit-th failure: it starts that lock and records it.
  if (charge.operatorFailures === operatorLimit) {
    await gw.store.db.updateTable('hardware_token_assign_throttle').set({ locked_until: lockedUntil }).where('actor', '=', operatorKey(who)).where('failures', '=', operatorLimit).where('locked_until', 'is', null).execute();
    await gw.audit.append(gw.store.db, { ...auditOf(who), type: 'hardware_token.assign_locked', subject: userId, data: { ...base, scope: 'operator', failures: charge.operatorFailures, lockSeconds: assignLockSeconds, lockedUntil } });
  }
  if (charge.failures === limit) {
    await gw.store.db.updateTable('hardware_tokens').set({ assign_locked_until: lockedUntil }).where('id', '=', row.id).where('assign_failures', '=', limit).where('assign_locked_until', 'is', null).execute();
    await gw.audit.append(gw.store.db, { ...auditOf(who), type: 'hardware_token.assign_locked', subject: userId, data: { ...base, scope: 'token', failures: charge.failures, lockSeconds: assignLockSeconds, lockedUntil } });
  }
  throw new AppError('token_code_invalid', { invalidParams: [{ pointer: nextCode === undefined ? '/code' : '/next_code', reason }] });
}

export async function unassignToken(gw: Gateway, who: TokenActor, serial: string, reason: string): Promise<TokenView> {
  await gw.store.db.transaction().execute(async (tx) => {
    const row = await requireToken(gw, tx, serial);
    if (row.state !== 'assigned') throw stateConflict(row, 'only an assigned token can be unassigned');
    await releaseInTx(gw, tx, row, 'unassigned', who, reason);
  });
  return getToken(gw, serial);
}

/** Lost: unusable at once, final. From unassigned (lost from stock) or assigned. */
export async function reportTokenLost(gw: Gateway, who: TokenActor, serial: string, reason: string): Promise<TokenView> {
  await gw.store.db.transaction().execute(async (tx) => {
    const row = await requireToken(gw, tx, serial);
    if (row.state !== 'assigned' && row.state !== 'unassigned') throw stateConflict(row, 'it cannot be reported lost');
    await releaseInTx(gw, tx, row, 'lost', who, reason);
  });
  return getToken(gw, serial);
}

/** Revoked: withdrawn for good (broken, returned, compromised). Also from lost. */
export async function revokeToken(gw: Gateway, who: TokenActor, serial: string, reason: string): Promise<TokenView> {
  await gw.store.db.transaction().execute(async (tx) => {
    const row = await requireToken(gw, tx, serial);
    if (row.state === 'revoked') throw stateConflict(row, 'it is revoked already');
    await releaseInTx(gw, tx, row, 'revoked', who, reason);
  });
  return getToken(gw, serial);
}

export interface ReplaceInput {
  /** The user's current token. */
  serial: string;
  newSerial: string;
  /** A current code of the NEW token. */
  code: string;
  nextCode?: string | undefined;
  /** What happened to the old one. */
  oldState: 'lost' | 'revoked';
  reason: string;
}

/** Old token lost/revoked and a new one assigned to the same user, in one transaction. */
export async function replaceToken(gw: Gateway, who: TokenActor, input: ReplaceInput): Promise<TokenView> {
  const oldSerial = serialOrThrow(input.serial);
  const newSerial = serialOrThrow(input.newSerial);
  if (oldSerial === newSerial) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/new_serial', reason: 'must differ from the old serial' }] });
  const old = await requireToken(gw, gw.store.db, oldSerial);
  if (old.state !== 'assigned' || old.user_id === null) throw stateConflict(old, 'only an assigned token can be replaced');
  const userId = old.user_id;
  const fresh = await requireToken(gw, gw.store.db, newSerial);
  if (fresh.state !== 'unassigned') throw stateConflict(fresh, 'the replacement must be unassigned');
  const match = await checkAssignCode(gw, who, fresh, userId, input.code, input.nextCode, 'not a current code of the new token');
  await gw.store.db.transaction().execute(async (tx) => {
    const o = await requireToken(gw, tx, oldSerial);
    const n = await requireToken(gw, tx, newSerial);
    if (o.state !== 'assigned' || o.user_id !== userId || n.state !== 'unassigned' || n.counter !== fresh.counter) throw stateConflict(n, 'a token changed meanwhile');
    await releaseInTx(gw, tx, o, input.oldState, who, input.reason);
    await assignInTx(gw, tx, n, userId, match, who, input.reason);
    await gw.audit.append(tx, { ...auditOf(who), type: 'hardware_token.replaced', subject: userId, data: { oldSerial, newSerial, oldState: input.oldState, by: who.by, reason: input.reason } });
  });
  await refundOperatorAttempt(gw, operatorKey(who));
  return getToken(gw, newSerial);
}

export interface ResyncInput {
  code: string;
  nextCode: string;
}

/**
 * Charges one resynchronisation attempt against the token BEFORE its codes are compared
 * (helpdesk and self-service alike: without it a resync would be an unthrottled oracle for
 * a user's codes). A count of its own, not the factor's `failures`: resync is what unlocks
 * a token that verification locked (with `hardwareTokens.lockSeconds: 0` nothing else
 * does), so it must stay usable then. After `resyncMaxFailures` failures in a row the
 * token's resync is refused for `resyncLockSeconds` (429); a success clears the count.
 * One conditional UPDATE, so parallel attempts — in any gateway process — never compare
 * more than the limit.
 */
async function chargeResyncAttempt(gw: Gateway, tokenId: string, nowMs: number): Promise<{ failures: number } | { retryAfterSeconds: number }> {
  const { resyncMaxFailures: limit, resyncLockSeconds } = gw.config.hardwareTokens;
  // A lock that ran out starts the count again.
  await gw.store.db.updateTable('hardware_tokens').set({ resync_failures: 0, resync_locked_until: null }).where('id', '=', tokenId).where('resync_locked_until', '<=', nowMs).execute();
  const charged = await gw.store.db
    .updateTable('hardware_tokens')
    .set((eb) => ({ resync_failures: eb('resync_failures', '+', 1) }))
    .where('id', '=', tokenId)
    .where('resync_failures', '<', limit)
    .returning('resync_failures')
    .executeTakeFirst();
  if (charged !== undefined) return { failures: Number(charged.resync_failures) };
  // At the limit without a lock time (the attempt that reached it is still being compared,
  // or its process stopped): the lock starts now, so it always runs out.
  await gw.store.db.updateTable('hardware_tokens').set({ resync_locked_until: nowMs + resyncLockSeconds * 1000 }).where('id', '=', tokenId).where('resync_locked_until', 'is', null).execute();
  const row = await gw.store.db.selectFrom('hardware_tokens').select('resync_locked_until').where('id', '=', tokenId).executeTakeFirst();
  const until = row?.resync_locked_until === null || row?.resync_locked_until === undefined ? nowMs + resyncLockSeconds * 1000 : Number(row.resync_locked_until);
  return { retryAfterSeconds: Math.max(1, Math.ceil((until - nowMs) / 1000)) };
}

/** The same refusal whichever of the two codes (or both) was wrong. */
function resyncRefused(): AppError {
  const reason = 'not two consecutive codes of this token';
  return new AppError('token_resync_failed', { invalidParams: [{ pointer: '/code', reason }, { pointer: '/next_code', reason }] });
}

/**
 * Two consecutive codes found in the wide sync window re-align the counter (events) or the
 * drift (time) and clear the failure count, which unlocks a token locked by failures. One
 * guarded update: the counter only moves forward. The attempt is charged first
 * (chargeResyncAttempt); every failure is audited, and the one that reaches the limit also
 * as `hardware_token.resync_locked`.
 */
async function resyncRow(gw: Gateway, who: TokenActor, row: HardwareTokensTable, input: ResyncInput, reason: string | undefined): Promise<void> {
  const now = gw.clock.now();
  const nowMs = now.getTime();
  const w = windows(gw);
  const [first, second] = [normaliseOtpInput(input.code), normaliseOtpInput(input.nextCode)];
  if (row.state !== 'unassigned' && (row.state !== 'assigned' || row.factor_id === null)) throw stateConflict(row, 'only an assigned or unassigned token can be resynchronised');
  const f = row.state === 'assigned' && row.factor_id !== null ? await gw.store.db.selectFrom('factors').selectAll().where('id', '=', row.factor_id).executeTakeFirst() : undefined;
  const params = f === undefined ? undefined : parseHardwareOtpParams(JSON.parse(f.params) as Record<string, unknown>);
  if (row.state === 'assigned' && (f === undefined || params === undefined)) throw stateConflict(row, 'its factor is missing');

  const charge = await chargeResyncAttempt(gw, row.id, nowMs);
  if ('retryAfterSeconds' in charge) {
    await gw.audit.append(gw.store.db, { ...auditOf(who), type: 'hardware_token.resync_refused', subject: row.user_id, data: { tokenId: row.id, serial: row.serial, by: who.by, reason: 'too_many_failures' } });
    throw new AppError('too_many_requests', { detail: 'Too many failed resynchronisations of this token; try again later.', retryAfterSeconds: charge.retryAfterSeconds });
  }
  const { resyncMaxFailures: limit, resyncLockSeconds } = gw.config.hardwareTokens;
  const failed = async (): Promise<never> => {
    await gw.audit.append(gw.store.db, { ...auditOf(who), type: 'hardware_token.resync_failed', subject: row.user_id, data: { tokenId: row.id, serial: row.serial, by: who.by, failures: charge.failures, limit } });
    // Exactly one attempt is charged the limit-th failure: it starts the lock (a refused
    // attempt in between may have started it a moment earlier) and records it.
    if (charge.failures === limit) {
      const lockedUntil = nowMs + resyncLockSeconds * 1000;
      await gw.store.db.updateTable('hardware_tokens').set({ resync_locked_until: lockedUntil }).where('id', '=', row.id).where('resync_failures', '=', limit).execute();
      await gw.audit.append(gw.store.db, { ...auditOf(who), type: 'hardware_token.resync_locked', subject: row.user_id, data: { tokenId: row.id, serial: row.serial, by: who.by, failures: charge.failures, lockSeconds: resyncLockSeconds, lockedUntil } });
    }
    throw resyncRefused();
  };
  /** The count starts again after a success, in the transaction that applies it. */
  const clearCount = (tx: Tx) => tx.updateTable('hardware_tokens').set({ resync_failures: 0, resync_locked_until: null }).where('id', '=', row.id).execute();

  if (f === undefined || params === undefined) {
    const key = inventoryKey(gw, row);
    const match = matchConsecutiveCodes(key, codeParams(row), { counter: Number(row.counter), driftSteps: Number(row.drift_steps) }, first, second, now, w.sync);
    if (match === undefined) return failed();
    const moved = await gw.store.db.transaction().execute(async (tx) => {
      const r = await tx
        .updateTable('hardware_tokens')
        .set({ counter: match.next.counter, drift_steps: match.next.driftSteps, bind_failures: 0, updated_at: nowMs })
        .where('id', '=', row.id)
        .where('state', '=', 'unassigned')
        .where('counter', '<', match.next.counter)
        .returning('id')
        .executeTakeFirst();
      if (r === undefined) return false;
      await clearCount(tx);
      await gw.audit.append(tx, { ...auditOf(who), type: 'hardware_token.resynced', subject: null, data: { tokenId: row.id, serial: row.serial, by: who.by, counter: match.next.counter, driftSteps: match.next.driftSteps, unlocked: false, ...(reason === undefined ? {} : { reason }) } });
      return true;
    });
    if (!moved) return failed();
    return;
  }
  const key = unsealFactorSeed(gw.sealer, { id: f.id, secretSealed: f.secret_sealed });
  if (key === undefined) throw stateConflict(row, 'its factor has no seed');
  const match = matchConsecutiveCodes(key, withBindingChallenge(params), { counter: Number(f.counter), driftSteps: params.driftSteps }, first, second, now, w.sync);
  if (match === undefined) return failed();
  const wasLocked = isLocked(gw, f.failures, f.locked_until, nowMs);
  const moved = await gw.store.db.transaction().execute(async (tx) => {
    const r = await tx
      .updateTable('factors')
      .set({ counter: match.next.counter, params: JSON.stringify({ ...params, driftSteps: match.next.driftSteps }), failures: 0, locked_until: null, updated_at: nowMs })
      .where('id', '=', f.id)
      .where('counter', '<', match.next.counter)
      .returning('id')
      .executeTakeFirst();
    if (r === undefined) return false;
    await clearCount(tx);
    await gw.audit.append(tx, { ...auditOf(who), type: 'hardware_token.resynced', subject: row.user_id, data: { tokenId: row.id, serial: row.serial, factorId: f.id, by: who.by, counter: match.next.counter, driftSteps: match.next.driftSteps, unlocked: wasLocked, ...(reason === undefined ? {} : { reason }) } });
    return true;
  });
  if (!moved) return failed();
}

export async function resyncToken(gw: Gateway, who: TokenActor, serial: string, input: ResyncInput, reason: string): Promise<TokenView> {
  const row = await requireToken(gw, gw.store.db, serial);
  await resyncRow(gw, who, row, input, reason);
  return getToken(gw, serial);
}

// ---- self-service ------------------------------------------------------------------------

/**
 * Charges one self-service attempt for the user BEFORE anything is compared. Returns the
 * seconds to wait when the user is over `bindMaxFailures` (refused for `factors.lockSeconds`),
 * undefined when charged; never throws, so it can share the caller's transaction. A success
 * resets it.
 */
async function chargeUserAttemptIn(gw: Gateway, ex: Executor, userId: string, nowMs: number): Promise<number | undefined> {
  const limit = gw.config.hardwareTokens.bindMaxFailures;
  const lockMs = gw.config.factors.lockSeconds * 1000;
  await ex
    .insertInto('hardware_token_bind_throttle')
    .values({ user_id: userId, failures: 0, locked_until: null, last_failed_at: nowMs })
    .onConflict((oc) => oc.column('user_id').doNothing())
    .execute();
  // A lock that ran out starts the count again.
  await ex.updateTable('hardware_token_bind_throttle').set({ failures: 0, locked_until: null }).where('user_id', '=', userId).where('locked_until', '<=', nowMs).execute();
  const charged = await ex
    .updateTable('hardware_token_bind_throttle')
    .set((eb) => ({ failures: eb('failures', '+', 1), last_failed_at: nowMs }))
    .where('user_id', '=', userId)
    .where('failures', '<', limit)
    .returning('failures')
    .executeTakeFirst();
  if (charged !== undefined) return undefined;
  const row = await ex.selectFrom('hardware_token_bind_throttle').select('locked_until').where('user_id', '=', userId).executeTakeFirst();
  const until = row?.locked_until === null || row?.locked_until === undefined ? nowMs + lockMs : Number(row.locked_until);
  if (row?.locked_until === null) await ex.updateTable('hardware_token_bind_throttle').set({ locked_until: until }).where('user_id', '=', userId).where('locked_until', 'is', null).execute();
  return Math.max(1, Math.ceil((until - nowMs) / 1000));
}

function tooManyWrongCodes(retryAfterSeconds: number): AppError {
  return new AppError('too_many_requests', { detail: 'Too many wrong token codes; try again later or ask the helpdesk.', retryAfterSeconds });
}

async function chargeUserAttempt(gw: Gateway, userId: string): Promise<void> {
  const wait = await chargeUserAttemptIn(gw, gw.store.db, userId, gw.clock.now().getTime());
  if (wait !== undefined) throw tooManyWrongCodes(wait);
}

async function resetUserAttempts(gw: Gateway, userId: string): Promise<void> {
  await gw.store.db.updateTable('hardware_token_bind_throttle').set({ failures: 0, locked_until: null }).where('user_id', '=', userId).execute();
}

/** Equal work for an unknown serial, so the answer's timing does not say whether a serial exists. */
function dummyMatch(gw: Gateway, rawCode: string, rawNextCode: string | undefined): void {
  const code = normaliseOtpInput(rawCode);
  const nextCode = rawNextCode === undefined ? undefined : normaliseOtpInput(rawNextCode);
  const key = createSecretKey(randomBytes(20));
  const p: TokenCodeParams = { kind: 'hotp', algorithm: 'SHA1', digits: code.length >= 6 && code.length <= 8 ? code.length : 6, periodSeconds: 0 };
  const w = windows(gw);
  if (nextCode === undefined) matchTokenCode(key, p, { counter: 0, driftSteps: 0 }, code, gw.clock.now(), w.normal);
  else matchConsecutiveCodes(key, p, { counter: 0, driftSteps: 0 }, code, nextCode, gw.clock.now(), w.sync);
}

export interface BindInput {
  serial: string;
  code: string;
  nextCode?: string | undefined;
  /** The user's name for it; default "<manufacturer> <serial>". */
  label?: string | undefined;
}

/**
 * A signed-in user binds a token by the serial printed on it plus a current code. Unknown
 * serial, a serial that is not in stock and a wrong code all give `token_bind_failed`.
 * Attempts are charged per user and per serial before anything is compared.
 */
export async function bindOwnToken(gw: Gateway, userId: string, input: BindInput, who: AuditActor): Promise<TokenView> {
  const self: TokenActor = { ...who, by: 'self' };
  const label = input.label === undefined || input.label === '' ? undefined : checkLabel(input.label);
  const serial = normaliseSerial(input.serial);
  const limit = gw.config.hardwareTokens.bindMaxFailures;
  // The user's attempt and the serial's are charged in one transaction, and the serial's
  // UPDATE runs whether or not the serial is in stock (against no row when it is not): one
  // commit and the same statements either way, so the time taken does not tell an unknown
  // (or someone else's) serial from one waiting in stock.
  type Charged = { kind: 'locked'; wait: number } | { kind: 'charged'; row: HardwareTokensTable | undefined };
  const charged = await gw.store.db.transaction().execute(async (tx): Promise<Charged> => {
    const wait = await chargeUserAttemptIn(gw, tx, userId, gw.clock.now().getTime());
    if (wait !== undefined) return { kind: 'locked', wait };
    const found = serial === undefined ? undefined : await tx.selectFrom('hardware_tokens').selectAll().where('serial', '=', serial).executeTakeFirst();
    const row = found?.state === 'unassigned' ? found : undefined;
    const serialCharged = await chargeBindAttempt(gw, row?.id ?? '', limit, tx);
    return { kind: 'charged', row: serialCharged ? row : undefined };
  });
  if (charged.kind === 'locked') throw tooManyWrongCodes(charged.wait);
  const refuse = async (): Promise<never> => {
    await gw.audit.append(gw.store.db, { ...auditOf(who), type: 'hardware_token.bind_failed', subject: userId, data: { serial: serial ?? null, by: 'self' } });
    throw new AppError('token_bind_failed', { invalidParams: [{ pointer: '/code', reason: 'serial number or code not accepted' }] });
  };
  const row = charged.row;
  if (row === undefined) {
    // Not in stock, or its own attempts used up: the same comparison work all the same.
    dummyMatch(gw, input.code, input.nextCode);
    return refuse();
  }
  const match = matchInventory(gw, row, input.code, input.nextCode);
  if (match === undefined) return refuse();
  try {
    await gw.store.db.transaction().execute(async (tx) => {
      const fresh = await lockedToken(gw, tx, row.serial);
      if (fresh === undefined || fresh.state !== 'unassigned' || fresh.counter !== row.counter) throw new AppError('token_bind_failed');
      await assignInTx(gw, tx, fresh, userId, match, self, undefined, label);
    });
  } catch (err) {
    if (err instanceof AppError && (err.code === 'token_bind_failed' || err.code === 'token_state_conflict')) return refuse();
    throw err;
  }
  await resetUserAttempts(gw, userId);
  return getToken(gw, row.serial);
}

/** The user's own assigned token, by its factor id (what /v1/me/factors lists). */
async function ownTokenRow(ex: Executor, userId: string, factorId: string): Promise<HardwareTokensTable> {
  const row = await ex.selectFrom('hardware_tokens').selectAll().where('factor_id', '=', factorId).where('user_id', '=', userId).where('state', '=', 'assigned').executeTakeFirst();
  if (row === undefined) throw new AppError('not_found', { detail: 'No such hardware token among your factors.' });
  return row;
}

export async function resyncOwnToken(gw: Gateway, userId: string, factorId: string, input: ResyncInput, who: AuditActor): Promise<TokenView> {
  const row = await ownTokenRow(gw.store.db, userId, factorId);
  await chargeUserAttempt(gw, userId);
  await resyncRow(gw, { ...who, by: 'self' }, row, input, undefined);
  await resetUserAttempts(gw, userId);
  return getToken(gw, row.serial);
}

/** The user gives the token back (it returns to stock) or reports it lost (final). */
export async function releaseOwnToken(gw: Gateway, userId: string, factorId: string, to: 'unassigned' | 'lost', who: AuditActor): Promise<void> {
  await gw.store.db.transaction().execute(async (tx) => {
    const found = await ownTokenRow(tx, userId, factorId);
    const row = await requireToken(gw, tx, found.serial);
    if (row.state !== 'assigned' || row.user_id !== userId) throw new AppError('not_found', { detail: 'No such hardware token among your factors.' });
    await releaseInTx(gw, tx, row, to, { ...who, by: 'self' }, to === 'lost' ? 'reported lost by the user' : 'removed by the user');
  });
}

/** Whether a factor row belongs to an inventory token (removal must go through releaseOwnToken). */
export async function tokenOfFactor(gw: Gateway, factorId: string): Promise<string | undefined> {
  const row = await gw.store.db.selectFrom('hardware_tokens').select('serial').where('factor_id', '=', factorId).executeTakeFirst();
  return row?.serial;
}

/**
 * A user (or an operator) removing the hardware_otp factor through /v1/me/factors: the
 * framework deletes the factor row; the token goes back to stock with its counter and drift,
 * in the same transaction. Reporting it lost is the separate, explicit action.
 */
onFactorRemoved(async (gw, tx, factor) => {
  if (factor.type !== 'hardware_otp') return;
  const row = await tx
    .selectFrom('hardware_tokens')
    .selectAll()
    .where('factor_id', '=', factor.id)
    .$if(gw.store.dialect === 'postgres', (q) => q.forUpdate())
    .executeTakeFirst();
  if (row === undefined || row.state !== 'assigned') return;
  const { counter, drift } = liveState(row, factor);
  await tx
    .updateTable('hardware_tokens')
    .set({ state: 'unassigned', user_id: null, factor_id: null, counter, drift_steps: drift, assigned_at: null, bind_failures: 0, updated_at: gw.clock.now().getTime() })
    .where('id', '=', row.id)
    .where('factor_id', '=', factor.id)
    .execute();
  // The actor is on the factor.removed event appended right after this in the same transaction.
  await gw.audit.append(tx, { type: 'hardware_token.unassigned', subject: factor.user_id, data: { tokenId: row.id, serial: row.serial, from: 'assigned', by: 'factor_removal', reason: 'factor removed' } });
});

export interface TokenChallenge {
  factorId: string;
  serial: string;
  challenge: string;
}

/**
 * The challenges this step-up asks of the user's challenge-response tokens (GM/T 0021 Q):
 * what the page and the API show next to the code field. Empty for a user without one.
 */
export async function stepUpTokenChallenges(gw: Gateway, stepUp: { id: string; userId: string }): Promise<TokenChallenge[]> {
  const rows = await gw.store.db.selectFrom('factors').select(['id', 'params']).where('user_id', '=', stepUp.userId).where('type', '=', 'hardware_otp').where('status', '=', 'active').orderBy('created_at').execute();
  const key = tokenChallengeKey(gw.sealer);
  const out: TokenChallenge[] = [];
  for (const r of rows) {
    const p = parseHardwareOtpParams(JSON.parse(r.params) as Record<string, unknown>);
    if (p === undefined || p.challengeLength === null) continue;
    out.push({ factorId: r.id, serial: p.serial, challenge: stepUpChallenge(key, stepUp.id, p.challengeLength) });
  }
  return out;
}
