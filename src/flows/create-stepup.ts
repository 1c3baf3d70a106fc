import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import { hashToken, newId, newSecretToken } from '../crypto/ids.ts';
import type { AllowDecision } from '../policy/evaluate-policies.ts';
import { assertBoundMoney } from './bound-money.ts';
import { displayTextProblem } from '../verifier/display-text.ts';
import { currentPolicySet } from '../stepup/policy-store.ts';
import { decideForUser } from './policies.ts';
import type { Who } from './verify-stepup-factor.ts';
import type { Tx } from '../store/database.ts';
import type { StepUpsTable } from '../store/schema.ts';
import { type ProvenFactor, satisfiedAlternative, toStepUp } from '../stepup/stepup-record.ts';
import { recheckAtCompletion } from './stepup-recheck.ts';
import { FixedSql } from '../store/fixed-sql.ts';
import { factorMeetsPolicy, policyAt } from './factor-constraints.ts';
import type { Policy } from '../policy/policy-schema.ts';

/**
 * Text the user approves (context strings, the binding message) must read as what it is and
 * have one spelling: nothing invisible or reordering (Cc, Cf, Co, U+2028/U+2029, lone
 * surrogates) and Unicode NFC, required rather than applied (src/verifier/display-text.ts,
 * the rule the verifier applies to the token too).
 */
export const approvalTextProblem = displayTextProblem;
const approvalText = (max: number) =>
  z
    .string()
    .max(max)
    .superRefine((text, ctx) => {
      const problem = approvalTextProblem(text);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
    });

/**
 * What the relying service asks for. `context` is the exact thing being authorised, so every
 * value must survive the trip to the token and back unchanged: numbers are integers within
 * ±(2^53 − 1) (a larger one was already rounded by the JSON parser, and a fraction is a
 * decimal string), and `__proto__` is no field name (a JavaScript object cannot hold it as
 * data: zod's record drops it without a word, and the token would approve less than was
 * sent; the parsed body no longer shows it, so `assertNoProtoField` checks the raw one).
 */
const contextValue = z.union([approvalText(256), z.int({ error: 'must be an integer within ±(2^53 − 1): send fractions and larger numbers as strings' }), z.boolean()]);
const CONTEXT_FIELD = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
// The shape of an amount; how many decimals it may have is its currency's (assertBoundMoney).
const AMOUNT_SYNTAX = /^-?\d{1,15}(\.\d{1,32})?$/;
export const createStepUpBody = z.strictObject({
  subject: z.string().min(1).max(128).describe('The user id or username.'),
  action: z.string().regex(/^[a-z0-9_]+(\.[a-z0-9_]+)*$/, 'must be dot-separated snake_case words').max(128),
  context: z
    .record(z.string().regex(CONTEXT_FIELD, 'must be a context field name'), contextValue)
    .refine((c) => Object.keys(c).length <= 32, 'at most 32 fields')
    .refine((c) => !('type' in c), '"type" is reserved (it carries the action in authorization_details)')
    .refine((c) => c.amount === undefined || (typeof c.amount === 'string' && AMOUNT_SYNTAX.test(c.amount)), { message: 'amount must be a decimal string such as "120.00"', path: ['amount'] })
    .refine((c) => c.amount === undefined || (typeof c.currency === 'string' && /^[A-Z]{3}$/.test(c.currency)), {
      message: 'an amount needs an ISO 4217 currency',
      path: ['currency'],
    }),
  binding_message: approvalText(200).min(1).optional().describe('Shown to the user: what is being approved (amount, payee).'),
  redirect_uri: z.url().max(2000).optional(),
  state: z.string().max(512).optional(),
});
export type CreateStepUpBody = z.output<typeof createStepUpBody>;

/** Refuses a raw (unparsed) create body whose `context` names the field `__proto__`. */
export function assertNoProtoField(raw: unknown): void {
  const context = typeof raw === 'object' && raw !== null ? (raw as { context?: unknown }).context : undefined;
  if (typeof context === 'object' && context !== null && Object.hasOwn(context, '__proto__')) {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: '/context/__proto__', reason: 'must be a context field name ("__proto__" cannot be one)' }] });
  }
}

export interface RelyingClient {
  clientId: string;
  allowedActions: string[];
  redirectUris: string[];
}

export interface CreatedStepUp {
  stepupId: string;
  ticket: string;
  userUrl: string;
  expiresIn: number;
  interval: number;
  acr: string;
  options: string[][];
}

// Every step-up creation runs these (fixed SQL, see src/store/fixed-sql.ts).
const USER_BY_SUBJECT = new FixedSql<{ id: string; groups: string; status: string }>('select "id", "groups", "status" from "users" where ("id" = ? or "username" = ?)');
const STEPUP_COLUMNS = [
  'id', 'client_id', 'user_id', 'action', 'context', 'amount', 'currency', 'binding_message', 'redirect_uri', 'state', 'status', 'policy_id', 'policy_version',
  'requirement', 'acr', 'token_ttl_seconds', 'max_age_seconds', 'ticket_hash', 'attempts', 'max_attempts', 'proven', 'amr', 'version', 'created_at', 'expires_at',
  'completed_at', 'auth_time', 'token_issued_at', 'token_jti', 'last_polled_at', 'poll_interval_seconds',
] as const satisfies readonly (keyof StepUpsTable)[];
// Compile-time: the list names every column of the table (a new column fails to build here).
const everyStepUpColumn: Exclude<keyof StepUpsTable, (typeof STEPUP_COLUMNS)[number]> extends never ? true : never = true;
void everyStepUpColumn;
const INSERT_STEPUP = new FixedSql(`insert into "stepups" (${STEPUP_COLUMNS.map((c) => `"${c}"`).join(', ')}) values (${STEPUP_COLUMNS.map(() => '?').join(', ')})`);

async function resolveSubject(gw: Gateway, subject: string) {
  const bySubject = await USER_BY_SUBJECT.first(gw.store.db, [subject, subject.normalize('NFKC').toLowerCase()]);
  if (bySubject === undefined || bySubject.status !== 'active') {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: '/subject', reason: 'no active user with this id or username' }] });
  }
  return { id: bySubject.id, groups: JSON.parse(bySubject.groups) as string[] };
}

/** The current policy set's decision for this user (the dry-run evaluator shares `decideForUser`). */
export async function decideStepUp(gw: Gateway, userId: string, groups: string[], action: string, context: Record<string, unknown>) {
  const set = await currentPolicySet(gw.store.db);
  return (await decideForUser(gw, set ?? { policies: [] }, { id: userId, groups }, action, context)).decision;
}

export async function createStepUp(gw: Gateway, client: RelyingClient, body: CreateStepUpBody, who: Who): Promise<CreatedStepUp> {
  assertBoundMoney(body.context);
  if (!client.allowedActions.includes(body.action)) {
    throw new AppError('forbidden', { detail: 'This client may not request step-up for this action.', invalidParams: [{ pointer: '/action', reason: 'not allowed for this client' }] });
  }
  if (body.redirect_uri !== undefined && !client.redirectUris.includes(body.redirect_uri)) {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: '/redirect_uri', reason: 'not a registered redirect URI of this client' }] });
  }
  const user = await resolveSubject(gw, body.subject);
  const decision = await decideStepUp(gw, user.id, user.groups, body.action, body.context);
  if (decision.decision === 'deny') {
    await gw.audit.append(gw.store.db, { type: 'stepup.refused', actor: client.clientId, subject: user.id, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { action: body.action, reason: decision.reason } });
    throw new AppError('access_denied', { detail: 'No policy allows this action.' });
  }
  if (decision.enrollmentRequired) {
    await gw.audit.append(gw.store.db, { type: 'stepup.refused', actor: client.clientId, subject: user.id, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { action: body.action, reason: 'enrollment_required', policyId: decision.policyId } });
    throw new AppError('enrollment_required', { detail: `The user must enrol one of: ${decision.require.anyOf.map((s) => s.join('+')).join(' | ')}.` });
  }
  return persist(gw, client, body, user.id, decision, who);
}

/**
 * `maxAgeSeconds` > 0: an authentication this user completed for this client within that
 * many seconds, whose proven factors satisfy the new requirement and acr and are all still
 * enrolled, active and within this policy's factor constraints, is reused — the
 * new step-up is completed at once with the old `auth_time` (the token says when the user
 * really authenticated). The new token is still bound to the new context. 0 (the default,
 * and the demo payment policies) means every step-up is proven afresh.
 */
async function reusableAuthentication(gw: Gateway, tx: Tx, clientId: string, userId: string, decision: AllowDecision, nowMs: number) {
  if (decision.maxAgeSeconds <= 0) return undefined;
  const rows = await tx
    .selectFrom('stepups')
    .select(['id', 'proven', 'amr', 'auth_time'])
    .where('user_id', '=', userId)
    .where('client_id', '=', clientId)
    .where('status', 'in', ['completed', 'token_issued'])
    .where('auth_time', '>=', nowMs - decision.maxAgeSeconds * 1000)
    .where('auth_time', '<=', nowMs)
    .orderBy('auth_time', 'desc')
    .limit(5)
    .execute();
  let policy: Policy | undefined;
  for (const r of rows) {
    const proven = JSON.parse(r.proven) as ProvenFactor[];
    if (r.auth_time === null || satisfiedAlternative(decision.satisfiable, proven, decision.acr) === undefined) continue;
    // A proof counts only while its factor is still the user's and active — a phone reported
    // stolen and removed (or a factor an operator disabled) must not keep approving new
    // step-ups for the rest of the max age — and only if that factor meets THIS policy's
    // constraints (an authenticator app a `totp` constraint excludes was fine for the
    // earlier step-up's policy, not for this one).
    policy ??= decision.version === undefined ? undefined : await policyAt(gw, decision.version, decision.policyId, tx);
    if (policy === undefined) return undefined;
    const factorIds = [...new Set(proven.map((p) => p.factorId))];
    const live = await tx.selectFrom('factors').select(['id', 'type', 'params']).where('user_id', '=', userId).where('id', 'in', factorIds).where('status', '=', 'active').execute();
    const qualifying = live.filter((f) => factorMeetsPolicy(policy, { type: f.type, params: JSON.parse(f.params) as Record<string, unknown> }));
    if (qualifying.length === factorIds.length) return { fromId: r.id, proven, amr: r.amr, authTime: Number(r.auth_time) };
  }
  return undefined;
}

/** What differs between new step-ups; the rest of a fresh row is the same for every one. */
export interface NewStepUp {
  id: string;
  clientId: string;
  userId: string;
  action: string;
  context: Record<string, unknown>;
  bindingMessage: string | null;
  redirectUri: string | null;
  state: string | null;
  policyId: string;
  policyVersion: number;
  anyOf: string[][];
  acr: string;
  tokenTtlSeconds: number;
  maxAgeSeconds: number;
  ticket: string;
}

/** The row of a new, pending step-up (the ticket stored as its hash), expiring after `stepup.transactionSeconds`. */
export function newStepUpRow(gw: Gateway, n: NewStepUp): StepUpsTable {
  const nowMs = gw.clock.now().getTime();
  const { transactionSeconds, maxAttempts, pollIntervalSeconds } = gw.config.stepup;
  return {
    id: n.id,
    client_id: n.clientId,
    user_id: n.userId,
    action: n.action,
    context: JSON.stringify(n.context),
    amount: typeof n.context.amount === 'string' ? n.context.amount : null,
    currency: typeof n.context.currency === 'string' ? n.context.currency : null,
    binding_message: n.bindingMessage,
    redirect_uri: n.redirectUri,
    state: n.state,
    status: 'pending',
    policy_id: n.policyId,
    policy_version: n.policyVersion,
    requirement: JSON.stringify({ anyOf: n.anyOf }),
    acr: n.acr,
    token_ttl_seconds: n.tokenTtlSeconds,
    max_age_seconds: n.maxAgeSeconds,
    ticket_hash: hashToken(n.ticket),
    attempts: 0,
    max_attempts: maxAttempts,
    proven: '[]',
    amr: '[]',
    version: 0,
    created_at: nowMs,
    expires_at: nowMs + transactionSeconds * 1000,
    completed_at: null,
    auth_time: null,
    token_issued_at: null,
    token_jti: null,
    last_polled_at: null,
    poll_interval_seconds: pollIntervalSeconds,
  };
}

async function persist(gw: Gateway, client: RelyingClient, body: CreateStepUpBody, userId: string, decision: AllowDecision, who: Who): Promise<CreatedStepUp> {
  const nowMs = gw.clock.now().getTime();
  const { transactionSeconds, pollIntervalSeconds } = gw.config.stepup;
  const id = newId('stp');
  const ticket = newSecretToken();
  await gw.store.db.transaction().execute(async (tx) => {
    const values = newStepUpRow(gw, {
      id,
      clientId: client.clientId,
      userId,
      action: body.action,
      context: body.context,
      bindingMessage: body.binding_message ?? null,
      redirectUri: body.redirect_uri ?? null,
      state: body.state ?? null,
      policyId: decision.policyId,
      policyVersion: decision.version ?? 0,
      // Only the alternatives this user can complete are offered.
      anyOf: decision.satisfiable,
      acr: decision.acr,
      tokenTtlSeconds: decision.tokenTtlSeconds,
      maxAgeSeconds: decision.maxAgeSeconds,
      ticket,
    });
    await INSERT_STEPUP.run(tx, STEPUP_COLUMNS.map((c) => values[c]));
    await gw.audit.append(tx, {
      type: 'stepup.created',
      actor: client.clientId,
      subject: userId,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { stepupId: id, action: body.action, policyId: decision.policyId, policyVersion: decision.version ?? 0, acr: decision.acr },
    });
    const reuse = await reusableAuthentication(gw, tx, client.clientId, userId, decision, nowMs);
    if (reuse !== undefined) {
      const recheck = await recheckAtCompletion(gw, tx, toStepUp(values), reuse.proven);
      if (recheck.kind === 'ok') {
        await tx
          .updateTable('stepups')
          .set({ status: 'completed', proven: JSON.stringify(reuse.proven), amr: reuse.amr, completed_at: nowMs, auth_time: reuse.authTime, version: 1 })
          .where('id', '=', id)
          .execute();
        await gw.audit.append(tx, {
          type: 'stepup.completed',
          actor: client.clientId,
          subject: userId,
          ip: who.ip ?? null,
          requestId: who.requestId ?? null,
          data: { stepupId: id, clientId: client.clientId, action: body.action, acr: decision.acr, reason: 'max_age', reusedFrom: reuse.fromId },
        });
        gw.metrics.stepups.inc({ event: 'completed' });
      }
    }
  });
  gw.metrics.stepups.inc({ event: 'created' });
  const base = gw.config.http.publicUrl.replace(/\/$/, '');
  return {
    stepupId: id,
    ticket,
    userUrl: `${base}/stepup/${id}?ticket=${ticket}`,
    expiresIn: transactionSeconds,
    interval: pollIntervalSeconds,
    acr: decision.acr,
    options: decision.satisfiable,
  };
}
