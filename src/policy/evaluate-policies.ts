import { type AcrFacts, type AcrValue, acrAtLeast, acrForFactorSet, BEST_CASE_ACR_FACTS } from './acr.ts';
import { checkConditions, type VelocityWindowFacts, velocityCurrencyOf } from './conditions.ts';
import type { Policy } from './policy-schema.ts';

export interface PolicyEvaluationInput {
  action: string;
  /** The exact thing being authorised; `amount` (decimal string) and `currency` feed the amount conditions. */
  context: Readonly<Record<string, unknown>>;
  user: {
    groups?: readonly string[];
    enrolledFactorTypes?: readonly string[];
    /**
     * What the user's enrolled credentials can prove, for alternatives that need aal3. Defaults
     * to the best case (a device-bound WebAuthn credential with UV), so `satisfiable` may be
     * optimistic: the flow must derive the token's acr from what was actually proven and refuse
     * a completion below the policy's `acr`.
     */
    acrFacts?: AcrFacts;
    /**
     * Whether the user's enrolled factor of `factorType` meets `policy`'s constraints on it
     * (the policy field `totp`). Without it every enrolled factor qualifies.
     */
    factorQualifies?: (policy: Policy, factorType: string) => boolean;
  };
  /** One entry per window `velocityWindowsFor` lists; a missing window makes its condition not hold. */
  velocity?: readonly VelocityWindowFacts[];
  /** The policy set version, echoed in the decision for the audit trail. */
  version?: number;
}

/** Why one policy of the action did or did not decide. */
export interface PolicyReason {
  policyId: string;
  priority: number;
  /** This policy decided. */
  matched: boolean;
  /** Its conditions hold (a later policy may hold too but never decides: the first one wins). */
  conditionsHold: boolean;
  because: string[];
}

export interface AllowDecision {
  decision: 'allow';
  policyId: string;
  version?: number;
  action: string;
  require: { anyOf: string[][] };
  acr: AcrValue;
  tokenTtlSeconds: number;
  maxAgeSeconds: number;
  /** The alternatives the user can complete with enrolled factors, in policy order. */
  satisfiable: string[][];
  /** No alternative is satisfiable: the caller answers `enrollment_required`. */
  enrollmentRequired: boolean;
  reasons: PolicyReason[];
}

export interface DenyDecision {
  decision: 'deny';
  reason: 'no_matching_policy';
  version?: number;
  reasons: PolicyReason[];
}

export type PolicyDecision = AllowDecision | DenyDecision;

/**
 * The policies for one action in evaluation order: priority ascending (lower first), then id —
 * a validated set never has two policies of one action at the same priority, so the id
 * tie-break only makes an unvalidated set deterministic.
 */
export function policiesForAction(policies: readonly Policy[], action: string): Policy[] {
  return policies
    .filter((p) => p.action === action)
    .sort((a, b) => a.priority - b.priority || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Decides what a step-up for `action` requires. Deny by default: no policy for the action, or
 * none whose conditions all hold, is a denial. The first policy (in priority order) whose
 * conditions hold decides. `reasons` covers every policy of this action, in evaluation order;
 * policies of other actions are left out (they were never candidates). Pure: the caller
 * supplies the velocity figures, nothing is read or written here, and request data never makes
 * it throw.
 */
export function evaluatePolicies(policies: readonly Policy[], input: PolicyEvaluationInput): PolicyDecision {
  const conditionInput = {
    context: input.context,
    groups: input.user.groups ?? [],
    velocity: input.velocity ?? [],
  };
  const version = input.version === undefined ? {} : { version: input.version };
  const reasons: PolicyReason[] = [];
  let decider: Policy | undefined;
  for (const policy of policiesForAction(policies, input.action)) {
    const r = checkConditions(policy.when, conditionInput);
    const decides = r.holds && decider === undefined;
    const because = r.holds && !decides ? [`shadowed: ${decider!.id} (priority ${decider!.priority}) decided first`, ...r.because] : r.because;
    reasons.push({ policyId: policy.id, priority: policy.priority, matched: decides, conditionsHold: r.holds, because });
    if (decides) decider = policy;
  }
  if (decider === undefined) return { decision: 'deny', reason: 'no_matching_policy', ...version, reasons };

  const enrolled = new Set(input.user.enrolledFactorTypes ?? []);
  const facts = input.user.acrFacts ?? BEST_CASE_ACR_FACTS;
  const anyOf = decider.require.anyOf.map((alt) => [...alt]);
  const satisfiable = anyOf.filter((alt) => {
    if (!alt.every((t) => enrolled.has(t) && (input.user.factorQualifies?.(decider, t) ?? true))) return false;
    const reached = acrForFactorSet(alt, facts);
    return reached !== null && acrAtLeast(reached, decider.acr);
  });
  return {
    decision: 'allow',
    policyId: decider.id,
    ...version,
    action: decider.action,
    require: { anyOf },
    acr: decider.acr,
    tokenTtlSeconds: decider.tokenTtlSeconds,
    maxAgeSeconds: decider.maxAgeSeconds,
    satisfiable: satisfiable.map((alt) => [...alt]),
    enrollmentRequired: satisfiable.length === 0,
    reasons,
  };
}

export interface VelocityWindow {
  windowSeconds: number;
  /** Currencies whose totals the caller must supply for this window (may be empty: count only). */
  currencies: string[];
}

/** The rolling windows (and currencies) the caller must query before evaluating `action`. */
export function velocityWindowsFor(policies: readonly Policy[], action: string): VelocityWindow[] {
  const windows = new Map<number, Set<string>>();
  for (const p of policies) {
    const v = p.when?.velocity;
    if (p.action !== action || v === undefined) continue;
    const currencies = windows.get(v.windowSeconds) ?? new Set<string>();
    const currency = v.maxAmount !== undefined ? velocityCurrencyOf(p.when!) : undefined;
    if (currency !== undefined) currencies.add(currency);
    windows.set(v.windowSeconds, currencies);
  }
  return [...windows.entries()]
    .sort(([a], [b]) => a - b)
    .map(([windowSeconds, currencies]) => ({ windowSeconds, currencies: [...currencies].sort() }));
}
