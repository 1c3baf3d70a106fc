import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import type { FactorType } from '../factors/factor.ts';
import { newId } from '../crypto/ids.ts';
import type { Executor, Tx } from '../store/database.ts';
import type { FactorsTable } from '../store/schema.ts';
import type { AuditActor } from './users.ts';

/**
 * Self-service factor management: listing, naming, removing, and the pending → active life
 * of an enrolment. Each factor type's own enrolment flow (scan a QR code, prove a phone,
 * bind a token, register a credential) uses these so every type is enrolled, audited and
 * removed the same way.
 */

export const MAX_LABEL_LENGTH = 64;

export interface FactorView {
  id: string;
  type: string;
  label: string;
  status: 'pending' | 'active' | 'disabled';
  createdAt: Date;
  lastUsedAt: Date | null;
  lockedUntil: Date | null;
  /** Public parameters worth showing (algorithm, digits, masked phone, serial, AAGUID…). */
  details: Record<string, unknown>;
}

/** Public parameter keys a listing may show; anything else in `params` stays internal. */
const SHOWN_PARAMS = ['algorithm', 'digits', 'period', 'phoneMasked', 'country', 'serial', 'tokenType', 'challengeLength', 'aaguid', 'backupEligible', 'backedUp', 'transports', 'remaining', 'authenticatorName', 'flaggedAt'];

export function toFactorView(row: FactorsTable, nowMs: number): FactorView {
  const params = JSON.parse(row.params) as Record<string, unknown>;
  const details: Record<string, unknown> = {};
  for (const k of SHOWN_PARAMS) if (params[k] !== undefined && !(k === 'challengeLength' && params[k] === null)) details[k] = params[k];
  return {
    id: row.id,
    type: row.type,
    label: row.label,
    status: row.status,
    createdAt: new Date(row.created_at),
    lastUsedAt: row.last_used_at === null ? null : new Date(row.last_used_at),
    lockedUntil: row.locked_until !== null && row.locked_until > nowMs ? new Date(row.locked_until) : null,
    details,
  };
}

/** The user's active factors (and unexpired pending ones when asked), oldest first. */
export async function listUserFactors(gw: Gateway, userId: string, options: { includePending?: boolean } = {}): Promise<FactorView[]> {
  const nowMs = gw.clock.now().getTime();
  const pendingSince = nowMs - gw.config.factors.pendingSeconds * 1000;
  const rows = await gw.store.db
    .selectFrom('factors')
    .selectAll()
    .where('user_id', '=', userId)
    .where((eb) =>
      options.includePending === true
        ? eb.or([eb('status', '=', 'active'), eb.and([eb('status', '=', 'pending'), eb('created_at', '>', pendingSince)])])
        : eb('status', '=', 'active'),
    )
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map((r) => toFactorView(r, nowMs));
}

export function checkLabel(label: string, pointer = '/label'): string {
  const trimmed = label.normalize('NFC').trim();
  // Control characters would corrupt listings and audit exports.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
  if (trimmed === '' || trimmed.length > MAX_LABEL_LENGTH || /[\u0000-\u001f\u007f]/.test(trimmed)) {
    throw new AppError('validation_failed', { invalidParams: [{ pointer, reason: `1–${MAX_LABEL_LENGTH} printable characters` }] });
  }
  return trimmed;
}

export interface NewPendingFactor {
  userId: string;
  type: FactorType;
  label: string;
  secretHash?: string | null;
  secretSealed?: string | null;
  params?: Record<string, unknown>;
  counter?: number;
}

/**
 * Serialises one user's enrolment starts: the user row is locked (PostgreSQL, FOR UPDATE;
 * on SQLite every write transaction holds the database's write lock already, BEGIN
 * IMMEDIATE) so a count of the user's factors and the insert that relies on it are not
 * interleaved with another start's, in this process or another on the same database.
 * Without it two parallel starts both count maxPerType - 1 and both insert. Throws
 * not_found when the user is gone.
 */
export async function lockUserForEnrolment(gw: Gateway, tx: Tx, userId: string): Promise<void> {
  const user = await tx
    .selectFrom('users')
    .select('id')
    .where('id', '=', userId)
    .$if(gw.store.dialect === 'postgres', (q) => q.forUpdate())
    .executeTakeFirst();
  if (user === undefined) throw new AppError('not_found', { detail: 'No such user.' });
}

/**
 * Starts an enrolment: a `pending` factor row that verification ignores. The user's older
 * pending rows of the same type are discarded (starting again replaces them), and the
 * per-type limit is checked against active factors — with the user locked first
 * (lockUserForEnrolment), so the limit holds under concurrency. Because a start always
 * replaces the type's older pending row, a user has at most one pending row per type, and
 * only it can become active: the count at the start bounds the count after activation.
 */
export async function insertPendingFactor(gw: Gateway, tx: Tx, input: NewPendingFactor): Promise<string> {
  const nowMs = gw.clock.now().getTime();
  await lockUserForEnrolment(gw, tx, input.userId);
  await tx.deleteFrom('factors').where('user_id', '=', input.userId).where('type', '=', input.type).where('status', '=', 'pending').execute();
  const active = await tx
    .selectFrom('factors')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('user_id', '=', input.userId)
    .where('type', '=', input.type)
    .where('status', '=', 'active')
    .executeTakeFirstOrThrow();
  if (Number(active.n) >= gw.config.factors.maxPerType) {
    throw new AppError('conflict', { detail: `At most ${gw.config.factors.maxPerType} factors of this type; remove one first.`, invalidParams: [{ pointer: '/type', reason: 'limit reached' }] });
  }
  const id = newId('fac');
  await tx
    .insertInto('factors')
    .values({
      id,
      user_id: input.userId,
      type: input.type,
      label: input.label,
      status: 'pending',
      secret_hash: input.secretHash ?? null,
      secret_sealed: input.secretSealed ?? null,
      params: JSON.stringify(input.params ?? {}),
      counter: input.counter ?? 0,
      failures: 0,
      locked_until: null,
      created_at: nowMs,
      updated_at: nowMs,
      last_used_at: null,
    })
    .execute();
  return id;
}

/** A pending factor of this user and type that has not timed out, or 404. */
export async function pendingFactor(gw: Gateway, executor: Executor, userId: string, factorId: string, type: FactorType): Promise<FactorsTable> {
  const pendingSince = gw.clock.now().getTime() - gw.config.factors.pendingSeconds * 1000;
  const row = await executor
    .selectFrom('factors')
    .selectAll()
    .where('id', '=', factorId)
    .where('user_id', '=', userId)
    .where('type', '=', type)
    .where('status', '=', 'pending')
    .where('created_at', '>', pendingSince)
    .executeTakeFirst();
  if (row === undefined) throw new AppError('not_found', { detail: 'No such enrolment in progress (it may have expired: start again).' });
  return row;
}

export interface Activation {
  /** Written together with the status change (the confirmation code's step, a new hash…). */
  counter?: number;
  secretHash?: string | null;
  params?: Record<string, unknown>;
  label?: string;
}

/**
 * Confirms an enrolment: pending → active with one guarded UPDATE (two concurrent
 * confirmations activate it once), audited `factor.enrolled`. False if it was not pending.
 */
export async function activatePendingFactor(gw: Gateway, tx: Tx, userId: string, factorId: string, change: Activation, who: AuditActor): Promise<boolean> {
  const nowMs = gw.clock.now().getTime();
  const updated = await tx
    .updateTable('factors')
    .set({
      status: 'active',
      updated_at: nowMs,
      ...(change.counter === undefined ? {} : { counter: change.counter }),
      ...(change.secretHash === undefined ? {} : { secret_hash: change.secretHash }),
      ...(change.params === undefined ? {} : { params: JSON.stringify(change.params) }),
      ...(change.label === undefined ? {} : { label: change.label }),
    })
    .where('id', '=', factorId)
    .where('user_id', '=', userId)
    .where('status', '=', 'pending')
    .returning(['id', 'type'])
    .executeTakeFirst();
  if (updated === undefined) return false;
  await gw.audit.append(tx, { type: 'factor.enrolled', actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId, factorType: updated.type } });
  return true;
}

async function ownedFactor(executor: Executor, userId: string, factorId: string): Promise<FactorsTable> {
  const row = await executor.selectFrom('factors').selectAll().where('id', '=', factorId).where('user_id', '=', userId).where('status', 'in', ['active', 'pending']).executeTakeFirst();
  if (row === undefined) throw new AppError('not_found', { detail: 'No such factor.' });
  return row;
}

export async function renameFactor(gw: Gateway, userId: string, factorId: string, label: string, who: AuditActor): Promise<FactorView> {
  const clean = checkLabel(label);
  return gw.store.db.transaction().execute(async (tx) => {
    const row = await ownedFactor(tx, userId, factorId);
    await tx.updateTable('factors').set({ label: clean, updated_at: gw.clock.now().getTime() }).where('id', '=', row.id).execute();
    await gw.audit.append(tx, { type: 'factor.renamed', actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId, factorType: row.type } });
    return toFactorView({ ...row, label: clean }, gw.clock.now().getTime());
  });
}

/** Factor types a user cannot remove themselves (the password is how they sign in). */
const NOT_SELF_REMOVABLE = new Set(['password']);

/**
 * Removes a factor (the row is deleted: sealed seeds and public keys go with it). Hooks
 * let a type undo what belongs to it outside the factors table (a hardware token returns to
 * the inventory). Audited `factor.removed`.
 */
export async function removeFactor(gw: Gateway, userId: string, factorId: string, who: AuditActor & { reason?: string }, options: { byOperator?: boolean } = {}): Promise<void> {
  await gw.store.db.transaction().execute((tx) => removeFactorIn(gw, tx, userId, factorId, who, options));
}

/** `removeFactor` inside the caller's transaction (an operator's factor reset removes several at once). */
export async function removeFactorIn(gw: Gateway, tx: Tx, userId: string, factorId: string, who: AuditActor & { reason?: string }, options: { byOperator?: boolean } = {}): Promise<void> {
  const row = await ownedFactor(tx, userId, factorId);
  if (options.byOperator !== true && NOT_SELF_REMOVABLE.has(row.type)) {
    throw new AppError('forbidden', { detail: 'The password cannot be removed; change it instead.' });
  }
  for (const hook of removalHooks) await hook(gw, tx, row);
  await tx.deleteFrom('factors').where('id', '=', row.id).execute();
  await gw.audit.append(tx, {
    type: 'factor.removed',
    actor: who.actor,
    subject: userId,
    ip: who.ip ?? null,
    requestId: who.requestId ?? null,
    data: { factorId, factorType: row.type, ...(who.reason === undefined ? {} : { reason: who.reason }) },
  });
}

export type RemovalHook = (gw: Gateway, tx: Tx, factor: FactorsTable) => Promise<void>;
const removalHooks: RemovalHook[] = [];

/** For factor types that keep state outside `factors` (hardware-token inventory, WebAuthn flags…). Call at module load. */
export function onFactorRemoved(hook: RemovalHook): void {
  removalHooks.push(hook);
}
