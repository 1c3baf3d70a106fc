import { type AcrValue, acrAtLeast, acrForFactorSet, acrLevel, isAcrValue } from '../policy/acr.ts';
import type { StepUpStatus, StepUpsTable } from '../store/schema.ts';

/** A proven factor inside a step-up transaction. */
export interface ProvenFactor {
  type: string;
  factorId: string;
  amr: string[];
  at: number;
  /** The acr this proof reached on its own, when its factor reported one (WebAuthn: aal3 on a device-bound credential). */
  acr?: string;
}

/** A step-up transaction as flows see it (parsed row). */
export interface StepUp {
  id: string;
  clientId: string;
  userId: string;
  action: string;
  context: Record<string, unknown>;
  bindingMessage: string | null;
  redirectUri: string | null;
  state: string | null;
  status: StepUpStatus;
  policyId: string;
  policyVersion: number;
  anyOf: string[][];
  acr: string;
  tokenTtlSeconds: number;
  maxAgeSeconds: number;
  ticketHash: string;
  attempts: number;
  maxAttempts: number;
  proven: ProvenFactor[];
  amr: string[];
  version: number;
  createdAt: Date;
  expiresAt: Date;
  completedAt: Date | null;
  authTime: Date | null;
  tokenIssuedAt: Date | null;
  pollIntervalSeconds: number;
}

export function toStepUp(row: StepUpsTable): StepUp {
  return {
    id: row.id,
    clientId: row.client_id,
    userId: row.user_id,
    action: row.action,
    context: JSON.parse(row.context) as Record<string, unknown>,
    bindingMessage: row.binding_message,
    redirectUri: row.redirect_uri,
    state: row.state,
    status: row.status,
    policyId: row.policy_id,
    policyVersion: row.policy_version,
    anyOf: (JSON.parse(row.requirement) as { anyOf: string[][] }).anyOf,
    acr: row.acr,
    tokenTtlSeconds: row.token_ttl_seconds,
    maxAgeSeconds: row.max_age_seconds,
    ticketHash: row.ticket_hash,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    proven: JSON.parse(row.proven) as ProvenFactor[],
    amr: JSON.parse(row.amr) as string[],
    version: row.version,
    createdAt: new Date(row.created_at),
    expiresAt: new Date(row.expires_at),
    completedAt: row.completed_at === null ? null : new Date(row.completed_at),
    authTime: row.auth_time === null ? null : new Date(row.auth_time),
    tokenIssuedAt: row.token_issued_at === null ? null : new Date(row.token_issued_at),
    pollIntervalSeconds: row.poll_interval_seconds,
  };
}

/** The status a client or user sees: a pending transaction past its expiry is expired. */
export function effectiveStatus(s: StepUp, now: Date): StepUpStatus {
  if ((s.status === 'pending' || s.status === 'completed') && now.getTime() >= s.expiresAt.getTime()) return 'expired';
  return s.status;
}

/**
 * The acr a fully proven factor set reaches: what the factor types give (acrForFactorSet,
 * conservative), raised by what one of its proofs reported on its own. Facts come from each
 * proof itself, never from another factor's amr (a hardware OTP's `hwk` does not make a
 * synced passkey device-bound). Proofs stored before factors reported an acr: a WebAuthn
 * proof whose own amr holds `hwk` and `user` counts as device-bound with UV.
 */
export function reachedAcr(set: readonly string[], proven: readonly ProvenFactor[]): AcrValue | null {
  let best = acrForFactorSet(set);
  if (best === null) return null;
  for (const p of proven) {
    if (!set.includes(p.type)) continue;
    let own: string | undefined = p.acr;
    if (own === undefined && p.type === 'webauthn') {
      own = acrForFactorSet(['webauthn'], { webauthnUserVerified: p.amr.includes('user'), webauthnDeviceBound: p.amr.includes('hwk') }) ?? undefined;
    }
    if (own !== undefined && isAcrValue(own) && acrLevel(own) > acrLevel(best)) best = own;
  }
  return best;
}

/**
 * The first alternative that is fully proven AND whose proof reaches the required acr. The
 * acr comes from what was actually proven (a synced passkey proves `user` but not `hwk`, so
 * it cannot complete an aal3 policy), never from what the policy hoped for.
 */
export function satisfiedAlternative(anyOf: string[][], proven: ProvenFactor[], requiredAcr: string): string[] | undefined {
  const have = new Set(proven.map((p) => p.type));
  return anyOf.find((set) => {
    if (!set.every((t) => have.has(t))) return false;
    const reached = reachedAcr(set, proven);
    return reached !== null && acrAtLeast(reached, requiredAcr);
  });
}

/**
 * The acr a completed step-up's token carries: what the completing proof reached, which is at
 * least the policy's (a device-bound fingerprint on an aal2 policy yields aal3: RFC 9470 says
 * the acr is the one satisfied).
 */
export function achievedAcr(s: Pick<StepUp, 'anyOf' | 'proven' | 'acr'>): string {
  const done = satisfiedAlternative(s.anyOf, s.proven, s.acr);
  const reached = done === undefined ? null : reachedAcr(done, s.proven);
  return reached !== null && acrAtLeast(reached, s.acr) ? reached : s.acr;
}
