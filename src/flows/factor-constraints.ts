import { SELF_CLIENT_ID, SELF_POLICY_ID } from './session-confirm.ts';
import type { Gateway } from '../gateway.ts';
import { parseTotpParams, totpParamsAllowed } from '../factors/totp/index.ts';
import type { Policy } from '../policy/policy-schema.ts';
import type { Executor } from '../store/database.ts';
import { policySetAt } from '../stepup/policy-store.ts';
import type { StepUp } from '../stepup/stepup-record.ts';
import { FixedSql } from '../store/fixed-sql.ts';

/**
 * Per-policy constraints on an enrolled factor's parameters (today: the policy field `totp`
 * — algorithms, digits, periods). Checked twice: when the step-up is created (a factor that
 * does not qualify is treated as not enrolled, so its alternative is not offered) and when a
 * factor is verified (against the policy version the step-up was created under, so an app
 * enrolled in between cannot slip under a stricter policy).
 */

/** Factor types some policy field can constrain; verification of other types skips the policy lookup. */
const CONSTRAINED_TYPES = new Set(['totp']);
// Every step-up creation and completion reads them (fixed SQL, see src/store/fixed-sql.ts).
const CONSTRAINED_FACTORS = new FixedSql<{ type: string; params: string }>(
  `select "type", "params" from "factors" where "user_id" = ? and "status" = 'active' and "type" in (${[...CONSTRAINED_TYPES].map(() => '?').join(', ')})`,
);

export function factorMeetsPolicy(policy: Policy | undefined, factor: { type: string; params: Record<string, unknown> }): boolean {
  if (factor.type !== 'totp' || policy?.totp === undefined) return true;
  const params = parseTotpParams(factor.params);
  return params !== undefined && totpParamsAllowed(params, policy.totp);
}

/** For policy evaluation: does the user hold a factor of `type` that meets the policy? */
export async function userFactorQualifier(gw: Gateway, userId: string, executor: Executor = gw.store.db): Promise<(policy: Policy, type: string) => boolean> {
  const { rows } = await CONSTRAINED_FACTORS.run(executor, [userId, ...CONSTRAINED_TYPES]);
  const factors = rows.map((r) => ({ type: r.type, params: JSON.parse(r.params) as Record<string, unknown> }));
  return (policy, type) => !CONSTRAINED_TYPES.has(type) || factors.some((f) => f.type === type && factorMeetsPolicy(policy, f));
}

// Stored policy-set versions never change, so a parsed version can be kept; a few suffice
// (step-ups live minutes, so only the newest versions are asked for).
const byVersion = new WeakMap<Gateway, Map<number, Policy[]>>();
const KEEP_VERSIONS = 8;

async function policiesAt(gw: Gateway, version: number, executor: Executor = gw.store.db): Promise<Policy[] | undefined> {
  let cache = byVersion.get(gw);
  if (cache === undefined) {
    cache = new Map();
    byVersion.set(gw, cache);
  }
  const hit = cache.get(version);
  if (hit !== undefined) return hit;
  const set = await policySetAt(executor, version);
  if (set === undefined) return undefined;
  cache.set(version, set.policies);
  if (cache.size > KEEP_VERSIONS) cache.delete(cache.keys().next().value!);
  return set.policies;
}

/**
 * One policy of a stored policy-set version (undefined when either is gone). Inside a
 * transaction pass it as `executor`: on SQLite the transaction holds the one connection.
 */
export async function policyAt(gw: Gateway, version: number, policyId: string, executor?: Executor): Promise<Policy | undefined> {
  return (await policiesAt(gw, version, executor))?.find((p) => p.id === policyId);
}

/**
 * Keeps the rows that meet the step-up's policy. A policy that cannot be found (it always
 * can: versions are never deleted) leaves no row of a constrained type: fail closed.
 */
export async function rowsMeetingStepUpPolicy<R extends { type: string; params: string }>(gw: Gateway, stepUp: StepUp, type: string, rows: R[]): Promise<R[]> {
  if (!CONSTRAINED_TYPES.has(type) || rows.length === 0) return rows;
  // The gateway's own "confirm it's you" step-ups: any enrolled factor of the type will do.
  if (stepUp.clientId === SELF_CLIENT_ID && stepUp.policyId === SELF_POLICY_ID) return rows;
  const policy = (await policiesAt(gw, stepUp.policyVersion))?.find((p) => p.id === stepUp.policyId);
  if (policy === undefined) return [];
  return rows.filter((r) => factorMeetsPolicy(policy, { type: r.type, params: JSON.parse(r.params) as Record<string, unknown> }));
}
