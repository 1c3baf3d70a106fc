import type { Gateway } from '../gateway.ts';
import { type AllowDecision, evaluatePolicies, velocityWindowsFor } from '../policy/evaluate-policies.ts';
import type { Tx } from '../store/database.ts';
import { currentPolicySet, velocityFacts } from '../stepup/policy-store.ts';
import { type ProvenFactor, type StepUp, satisfiedAlternative } from '../stepup/stepup-record.ts';
import { enrolledFactorTypes } from './policies.ts';
import { SELF_CLIENT_ID } from './session-confirm.ts';
import { userFactorQualifier } from './factor-constraints.ts';
import { FixedSql } from '../store/fixed-sql.ts';

// Read by every completion under a velocity policy (fixed SQL, see src/store/fixed-sql.ts).
const USER_GROUPS = new FixedSql<{ id: string; groups: string }>('select "id", "groups" from "users" where "id" = ?');
const USER_GROUPS_FOR_UPDATE = new FixedSql<{ id: string; groups: string }>('select "id", "groups" from "users" where "id" = ? for update');

/**
 * The policy decision is taken again when a step-up is about to complete, if the action's
 * policies have velocity conditions, or if the policy set changed since the step-up was
 * created (or last re-decided). Velocity: at creation the figures were those of that moment;
 * by completion other step-ups may have completed ("10 codes a day" with 3 created at once),
 * so only the figures at completion — with this user's completions serialised — are trusted.
 * A changed set: an administrator who removes a lenient policy (or every policy of an action,
 * to stop it) must not see step-ups already under way complete under the old rule for the
 * rest of their lifetime. A step-up completes under the policy set in force at completion.
 *
 * - `ok`: what was proven satisfies the decision now in force (its acr may be higher).
 * - `raise`: it does not; the step-up stays pending with the new requirement.
 * - `deny`: no policy allows the action any more (or the user cannot satisfy it).
 */
export type RecheckReason = 'velocity' | 'policy_changed';
export type Recheck = { kind: 'ok'; decision: AllowDecision | undefined } | { kind: 'raise'; decision: AllowDecision; reason: RecheckReason } | { kind: 'deny'; reason: RecheckReason };

export async function recheckAtCompletion(gw: Gateway, tx: Tx, s: StepUp, proven: ProvenFactor[]): Promise<Recheck> {
  // The gateway's own "confirm it's you" step-ups carry a built-in requirement, not a policy.
  if (s.clientId === SELF_CLIENT_ID) return { kind: 'ok', decision: undefined };
  const set = await currentPolicySet(tx);
  const changed = (set?.version ?? 0) !== s.policyVersion;
  if (set === undefined) return { kind: 'deny', reason: 'policy_changed' };
  const hasVelocity = velocityWindowsFor(set.policies, s.action).length > 0;
  if (!hasVelocity && !changed) return { kind: 'ok', decision: undefined };
  const reason: RecheckReason = changed ? 'policy_changed' : 'velocity';
  // One completion at a time per user: a second one waits here and then counts the first.
  // (SQLite: write transactions are serialised already, BEGIN IMMEDIATE.)
  const user = await (gw.store.dialect === 'postgres' ? USER_GROUPS_FOR_UPDATE : USER_GROUPS).first(tx, [s.userId]);
  if (user === undefined) return { kind: 'deny', reason };
  const facts = await velocityFacts(gw, set.policies, s.userId, s.action, { executor: tx, excludeStepUpId: s.id });
  const enrolled = await enrolledFactorTypes(gw, s.userId, tx);
  const factorQualifies = await userFactorQualifier(gw, s.userId, tx);
  const decision = evaluatePolicies(set.policies, {
    action: s.action,
    context: s.context,
    user: { groups: JSON.parse(user.groups) as string[], enrolledFactorTypes: enrolled, factorQualifies },
    velocity: facts,
    version: set.version,
  });
  if (decision.decision === 'deny') return { kind: 'deny', reason };
  if (satisfiedAlternative(decision.satisfiable, proven, decision.acr) !== undefined) return { kind: 'ok', decision };
  if (decision.enrollmentRequired) return { kind: 'deny', reason };
  return { kind: 'raise', decision, reason };
}
