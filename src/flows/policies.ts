import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError } from '../config/load-config.ts';
import { AppError, type InvalidParam } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import { STANDARD_FACTOR_TYPES } from '../policy/acr.ts';
import type { VelocityWindowFacts } from '../policy/conditions.ts';
import { DEMO_POLICIES } from '../policy/demo-policies.ts';
import { diffPolicySets, type PolicySetDiff, policySetDiffIsEmpty } from '../policy/diff-policy-sets.ts';
import { evaluatePolicies, type PolicyDecision } from '../policy/evaluate-policies.ts';
import { canonicalPolicy, parsePolicyFile, sortPolicies } from '../policy/policy-file.ts';
import type { Policy } from '../policy/policy-schema.ts';
import { type PolicyValidationError, validatePolicySet } from '../policy/validate-policy-set.ts';
import {
  currentPolicySet,
  hasAnyPolicySet,
  insertPolicySetVersion,
  listPolicySetVersions,
  type PolicySetVersion,
  type PolicySetVersionInfo,
  policySetAt,
  velocityFacts,
} from '../stepup/policy-store.ts';
import type { Executor, Tx } from '../store/database.ts';
import { type AuditActor, normaliseUsername } from './users.ts';
import { userFactorQualifier } from './factor-constraints.ts';
import { webauthnAcrFacts } from './webauthn.ts';
import { FixedSql } from '../store/fixed-sql.ts';
import { assertBoundMoney } from './bound-money.ts';

/**
 * Factor policies as stored, versioned, audited data: every change (admin API, `stepgate
 * policies apply`, the seed on first start) validates the whole resulting set and stores it
 * as the next version, with a `policy.changed` audit event in the same transaction. Old
 * versions stay for the history and diffs; the newest one is in force.
 *
 * Concurrency: the version number is the primary key, so of two writers that read version N
 * only one can store N+1. The other retries once on the new base (a single-policy change is
 * re-applied to it; a whole set simply replaces it, and both versions stay in the history),
 * or — when the caller named the `baseVersion` it edited — answers 409 `conflict`.
 */

export const MAX_COMMENT_LENGTH = 500;

/**
 * The factor types a policy may name: the live registry plus the standard types later
 * issues register (STANDARD_FACTOR_TYPES). Policies for totp or webauthn can therefore be
 * saved — and the demo set seeded — before those factor modules exist; until they do, no
 * user has such a factor enrolled, so an alternative naming one is simply never satisfiable
 * (the step-up flow offers only alternatives the user can complete).
 */
export function policyFactorTypes(gw: Gateway): string[] {
  return [...new Set<string>([...gw.factors.keys(), ...STANDARD_FACTOR_TYPES])];
}

/** `unreachable: …`: the validation code first, so a reader (or a script) sees the kind at once. */
export function policyErrorReason(e: { code: string; reason: string }): string {
  return e.reason.startsWith(`${e.code}:`) ? e.reason : `${e.code}: ${e.reason}`;
}

function validationFailed(errors: readonly PolicyValidationError[], pointerOf: (e: PolicyValidationError) => InvalidParam = (e) => ({ pointer: e.pointer, reason: policyErrorReason(e) })): AppError {
  return new AppError('validation_failed', { detail: 'The policy set is invalid; nothing was saved.', invalidParams: errors.map(pointerOf) });
}

/** Validates a list of policies against the factor types; throws 400 with a pointer per problem. */
export function validatePoliciesOrThrow(gw: Gateway, input: unknown): Policy[] {
  const result = validatePolicySet(input, { factorTypes: policyFactorTypes(gw) });
  if (!result.ok) throw validationFailed(result.errors);
  return result.policies;
}

/** The stored form: sorted as they are read (action, priority, id), canonical keys, defaults explicit. */
function canonicalSet(policies: readonly Policy[]): Policy[] {
  return sortPolicies(policies).map(canonicalPolicy);
}

// ---- reading --------------------------------------------------------------------------

/** The set in force; version 0 with no policies (deny everything) before anything was stored. */
export interface CurrentPolicySet {
  version: number;
  policies: Policy[];
  createdAt: Date | null;
  createdBy: string | null;
  comment: string;
}

export async function getCurrentPolicySet(gw: Gateway): Promise<CurrentPolicySet> {
  return (await currentPolicySet(gw.store.db)) ?? { version: 0, policies: [], createdAt: null, createdBy: null, comment: '' };
}

export async function getPolicySetVersion(gw: Gateway, version: number): Promise<PolicySetVersion> {
  const set = Number.isSafeInteger(version) && version > 0 ? await policySetAt(gw.store.db, version) : undefined;
  if (set === undefined) throw new AppError('not_found', { detail: `No policy set version ${version}.` });
  return set;
}

export async function policySetHistory(gw: Gateway, page: { limit: number; offset: number }): Promise<{ versions: PolicySetVersionInfo[]; hasMore: boolean }> {
  const rows = await listPolicySetVersions(gw.store.db, { limit: page.limit + 1, offset: page.offset });
  return { versions: rows.slice(0, page.limit), hasMore: rows.length > page.limit };
}

/** The difference between two stored versions; version 0 is the empty set before the first one. */
export async function diffPolicyVersions(gw: Gateway, from: number, to: number): Promise<PolicySetDiff> {
  const load = async (v: number): Promise<Policy[]> => (v === 0 ? [] : (await getPolicySetVersion(gw, v)).policies);
  return diffPolicySets(await load(from), await load(to));
}

// ---- writing --------------------------------------------------------------------------

export interface SavePolicyOptions {
  who: AuditActor;
  comment?: string;
  /**
   * The version the change was made against (optimistic concurrency): when another version
   * was stored since, the save is refused with 409 `conflict` instead of overwriting it.
   */
  baseVersion?: number;
}

export interface SavedPolicySet {
  /** The version in force after the call (the previous one when nothing changed). */
  version: number;
  previousVersion: number;
  /** False when the new set equals the current one: no version is stored then. */
  changed: boolean;
  diff: PolicySetDiff;
  set: CurrentPolicySet;
}

/** Thrown inside the transaction when another writer stored the version first. */
class LostVersionRace extends Error {}

/**
 * Builds the new set from the current one (inside the transaction). Returns the raw list to
 * validate, and how to present validation errors (single-policy changes point into `/policy`).
 */
type BuildNextSet = (current: readonly Policy[]) => { input: unknown[]; pointerOf?: (e: PolicyValidationError) => InvalidParam };

async function commitChange(gw: Gateway, build: BuildNextSet, options: SavePolicyOptions): Promise<SavedPolicySet> {
  const comment = (options.comment ?? '').trim();
  if (comment.length > MAX_COMMENT_LENGTH) {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: '/comment', reason: `at most ${MAX_COMMENT_LENGTH} characters` }] });
  }
  const createdBy = options.who.actor ?? 'system';
  const factorTypes = policyFactorTypes(gw);
  for (let attempt = 0; ; attempt++) {
    try {
      // Everything inside runs on `tx` (SQLite has one connection: gw.store.db would wait for this very transaction).
      return await gw.store.db.transaction().execute(async (tx: Tx) => {
        const current = await currentPolicySet(tx);
        const previousVersion = current?.version ?? 0;
        if (options.baseVersion !== undefined && options.baseVersion !== previousVersion) {
          throw new AppError('conflict', {
            detail: `The policy set is at version ${previousVersion}, not ${options.baseVersion}: reload it and apply your change again.`,
            invalidParams: [{ pointer: '/baseVersion', reason: `stale: the current version is ${previousVersion}` }],
          });
        }
        const before = current?.policies ?? [];
        const { input, pointerOf } = build(before);
        const result = validatePolicySet(input, { factorTypes });
        if (!result.ok) throw validationFailed(result.errors, pointerOf);
        const policies = canonicalSet(result.policies);
        const diff = diffPolicySets(before, policies);
        const unchanged: CurrentPolicySet = current ?? { version: 0, policies: [], createdAt: null, createdBy: null, comment: '' };
        if (policySetDiffIsEmpty(diff)) return { version: previousVersion, previousVersion, changed: false, diff, set: unchanged };

        const version = previousVersion + 1;
        const createdAt = gw.clock.now();
        if (!(await insertPolicySetVersion(tx, { version, policies, createdAt, createdBy, comment }))) throw new LostVersionRace();
        await gw.audit.append(tx, {
          type: 'policy.changed',
          actor: options.who.actor,
          ip: options.who.ip ?? null,
          requestId: options.who.requestId ?? null,
          data: {
            version,
            previousVersion,
            comment,
            added: diff.added.map((e) => e.id),
            removed: diff.removed.map((e) => e.id),
            changed: diff.changed.map((e) => e.id),
          },
        });
        return { version, previousVersion, changed: true, diff, set: { version, policies, createdAt, createdBy, comment } };
      });
    } catch (err) {
      if (!(err instanceof LostVersionRace)) throw err;
      gw.logger.debug({ attempt }, 'policy set version taken by a concurrent save');
      if (attempt >= 1) {
        throw new AppError('conflict', { detail: 'Other changes to the policy set were saved at the same time; reload it and try again.' });
      }
    }
  }
}

/** Replaces the whole set (admin API `PUT /v1/admin/policies`, `stepgate policies apply`). */
export async function savePolicySet(gw: Gateway, policies: unknown, options: SavePolicyOptions): Promise<SavedPolicySet> {
  if (!Array.isArray(policies)) throw validationFailed([{ policyId: null, pointer: '/policies', reason: 'must be a list of policies', code: 'invalid' }]);
  return commitChange(gw, () => ({ input: policies }), options);
}

const POLICY_POINTER = /^\/policies\/(\d+)(\/.*)?$/;

/**
 * Errors of a single-policy change: those in the policy sent point into the request body
 * (`/policy/acr`); those its arrival causes in another policy (now unreachable…) keep their
 * place in the set and name that policy.
 */
function pointIntoPolicy(index: number): (e: PolicyValidationError) => InvalidParam {
  return (e) => {
    const m = POLICY_POINTER.exec(e.pointer);
    if (m !== null && Number(m[1]) === index) return { pointer: `/policy${m[2] ?? ''}`, reason: policyErrorReason(e) };
    return { pointer: e.pointer, reason: `${policyErrorReason(e)}${e.policyId === null ? '' : ` (policy ${e.policyId})`}` };
  };
}

function idOf(policy: unknown): unknown {
  return typeof policy === 'object' && policy !== null && !Array.isArray(policy) ? (policy as { id?: unknown }).id : undefined;
}

function notFound(id: string): AppError {
  return new AppError('not_found', { detail: `No policy ${id} in the current set.` });
}

/** Adds one policy (its id must be new). */
export async function addPolicy(gw: Gateway, policy: unknown, options: SavePolicyOptions): Promise<SavedPolicySet> {
  return commitChange(
    gw,
    (current) => {
      const id = idOf(policy);
      if (typeof id === 'string' && current.some((p) => p.id === id)) {
        throw new AppError('conflict', { detail: `A policy ${id} exists: replace it with PUT /v1/admin/policies/${id}.`, invalidParams: [{ pointer: '/policy/id', reason: 'already taken' }] });
      }
      return { input: [...current, policy], pointerOf: pointIntoPolicy(current.length) };
    },
    options,
  );
}

/** Replaces the policy `id`; the policy sent may leave out its id, or must repeat it. */
export async function replacePolicy(gw: Gateway, id: string, policy: unknown, options: SavePolicyOptions): Promise<SavedPolicySet> {
  const sentId = idOf(policy);
  if (sentId !== undefined && sentId !== id) {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: '/policy/id', reason: 'must equal the id in the path (to rename, delete and add)' }] });
  }
  const withId = typeof policy === 'object' && policy !== null && !Array.isArray(policy) ? { ...policy, id } : policy;
  return commitChange(
    gw,
    (current) => {
      const index = current.findIndex((p) => p.id === id);
      if (index < 0) throw notFound(id);
      return { input: current.map((p, i) => (i === index ? withId : p)), pointerOf: pointIntoPolicy(index) };
    },
    options,
  );
}

export async function deletePolicy(gw: Gateway, id: string, options: SavePolicyOptions): Promise<SavedPolicySet> {
  return commitChange(
    gw,
    (current) => {
      if (!current.some((p) => p.id === id)) throw notFound(id);
      return { input: current.filter((p) => p.id !== id) };
    },
    options,
  );
}

// ---- seeding --------------------------------------------------------------------------

/** The set a fresh install starts with: `policies.seedFile`, or the demo set when it is empty. */
export function seedPolicies(gw: Gateway): { policies: Policy[]; source: string } {
  const file = gw.config.policies.seedFile;
  if (file === '') {
    const result = validatePolicySet(DEMO_POLICIES, { factorTypes: policyFactorTypes(gw) });
    // The demo set is part of the code: invalid means a programming error.
    if (!result.ok) throw new TypeError(`the built-in demo policies are invalid: ${result.errors.map(policyErrorReason).join('; ')}`);
    return { policies: result.policies, source: 'built-in demo set' };
  }
  const path = resolve(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('policies.seedFile', `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const result = parsePolicyFile(text, { factorTypes: policyFactorTypes(gw) });
  if (!result.ok) {
    const lines = result.errors.map((e) => `  ${path}:${e.line ?? '?'}: ${e.pointer === '' ? '(document)' : e.pointer}: ${policyErrorReason(e)}`);
    throw new ConfigError('policies.seedFile', `${path} is not a valid policy file (the gateway stores it as policy set version 1 on first start):\n${lines.join('\n')}`);
  }
  return { policies: result.policies, source: path };
}

/**
 * On start-up: when no policy set was ever stored, stores version 1 from the configured seed,
 * created by `config`. Several processes starting at once on one database: the primary key
 * on version 1 lets one of them store it; the others find it taken and carry on. An invalid
 * seed file stops the start (ConfigError); once version 1 exists the seed is not read again.
 * Returns the version stored, or undefined when there was one already.
 */
export async function seedPolicySet(gw: Gateway): Promise<number | undefined> {
  if (await hasAnyPolicySet(gw.store.db)) return undefined;
  const { policies: seed, source } = seedPolicies(gw);
  const policies = canonicalSet(seed);
  const comment = `initial policy set (${source})`;
  const stored = await gw.store.db.transaction().execute(async (tx: Tx) => {
    if (!(await insertPolicySetVersion(tx, { version: 1, policies, createdAt: gw.clock.now(), createdBy: 'config', comment }))) return false;
    await gw.audit.append(tx, {
      type: 'policy.changed',
      actor: 'config',
      data: { version: 1, previousVersion: 0, comment, added: policies.map((p) => p.id), removed: [], changed: [] },
    });
    return true;
  });
  if (!stored) return undefined;
  gw.logger.info({ version: 1, policies: policies.length, source }, 'stored the initial policy set');
  return 1;
}

// ---- evaluation -----------------------------------------------------------------------

export interface PolicyUserFacts {
  groups: string[];
  enrolledFactorTypes: string[];
}

/** Read by every step-up creation (fixed SQL, see src/store/fixed-sql.ts). */
const ENROLLED_TYPES = new FixedSql<{ type: string }>(`select distinct "type" from "factors" where "user_id" = ? and "status" = 'active'`);

/** The factor types the user has active and the gateway can verify. */
export async function enrolledFactorTypes(gw: Gateway, userId: string, executor: Executor = gw.store.db): Promise<string[]> {
  const { rows } = await ENROLLED_TYPES.run(executor, [userId]);
  return rows.map((r) => r.type).filter((t) => gw.factors.has(t as never)).sort();
}

/**
 * What `createStepUp` decides for a real user: groups as given, enrolled factor types and
 * velocity figures from the database (unless `velocity` overrides them), against `policies`.
 */
export async function decideForUser(
  gw: Gateway,
  set: { policies: readonly Policy[]; version?: number },
  user: { id: string; groups: string[] },
  action: string,
  context: Record<string, unknown>,
  velocity?: VelocityWindowFacts[],
): Promise<{ decision: PolicyDecision; enrolledFactorTypes: string[]; velocity: VelocityWindowFacts[] }> {
  const enrolled = await enrolledFactorTypes(gw, user.id);
  const factorQualifies = await userFactorQualifier(gw, user.id);
  const facts = velocity ?? (await velocityFacts(gw, set.policies, user.id, action));
  // What the user's own credentials can prove (a synced passkey cannot reach aal3).
  const acrFacts = enrolled.includes('webauthn') ? await webauthnAcrFacts(gw, user.id) : undefined;
  const decision = evaluatePolicies(set.policies, {
    action,
    context,
    user: { groups: user.groups, enrolledFactorTypes: enrolled, factorQualifies, ...(acrFacts === undefined ? {} : { acrFacts }) },
    velocity: facts,
    ...(set.version === undefined ? {} : { version: set.version }),
  });
  return { decision, enrolledFactorTypes: enrolled, velocity: facts };
}

export interface DryRunInput {
  action: string;
  context: Record<string, unknown>;
  /** A real user (id or username): groups, enrolled factors and velocity from the database. */
  subject?: string;
  /** A hypothetical user. */
  user?: { groups?: string[]; enrolledFactorTypes?: string[] };
  /** Velocity figures to assume (replaces the subject's real ones). */
  velocity?: VelocityWindowFacts[];
  /** Evaluate this proposed set instead of the one in force (validated like a save). */
  policies?: unknown[];
}

export interface DryRunResult {
  source: 'current' | 'proposed';
  decision: PolicyDecision;
  user: { id: string | null; status: string | null; groups: string[]; enrolledFactorTypes: string[] };
  velocity: VelocityWindowFacts[];
}

/**
 * The dry-run evaluator: the decision and the reasons for every policy of the action, for a
 * real or a hypothetical user, against the current or a proposed set. Reads only.
 */
export async function evaluatePolicyDryRun(gw: Gateway, input: DryRunInput): Promise<DryRunResult> {
  if (input.subject !== undefined && input.user !== undefined) {
    throw new AppError('validation_failed', { invalidParams: [{ pointer: '/user', reason: 'give subject (a real user) or user (a hypothetical one), not both' }] });
  }
  // The dry run answers what POST /v1/stepup would: an amount it refuses is refused here too.
  assertBoundMoney(input.context);
  let set: { policies: readonly Policy[]; version?: number };
  if (input.policies !== undefined) set = { policies: validatePoliciesOrThrow(gw, input.policies) };
  else {
    const current = await getCurrentPolicySet(gw);
    set = { policies: current.policies, version: current.version };
  }
  const source = input.policies === undefined ? 'current' : 'proposed';

  if (input.subject !== undefined) {
    const subject = input.subject;
    const row = await gw.store.db
      .selectFrom('users')
      .select(['id', 'groups', 'status'])
      .where((eb) => eb.or([eb('id', '=', subject), eb('username', '=', normaliseUsername(subject))]))
      .executeTakeFirst();
    if (row === undefined) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/subject', reason: 'no user with this id or username' }] });
    const groups = parseGroups(row.groups);
    const r = await decideForUser(gw, set, { id: row.id, groups }, input.action, input.context, input.velocity);
    return { source, decision: r.decision, user: { id: row.id, status: row.status, groups, enrolledFactorTypes: r.enrolledFactorTypes }, velocity: r.velocity };
  }
  const groups = input.user?.groups ?? [];
  const enrolled = input.user?.enrolledFactorTypes ?? [];
  const velocity = input.velocity ?? [];
  const decision = evaluatePolicies(set.policies, {
    action: input.action,
    context: input.context,
    user: { groups, enrolledFactorTypes: enrolled },
    velocity,
    ...(set.version === undefined ? {} : { version: set.version }),
  });
  return { source, decision, user: { id: null, status: null, groups, enrolledFactorTypes: enrolled }, velocity };
}

function parseGroups(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    return Array.isArray(v) ? v.filter((g): g is string => typeof g === 'string') : [];
  } catch {
    return [];
  }
}
