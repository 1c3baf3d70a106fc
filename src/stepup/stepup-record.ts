import { acrAtLeast, acrForFactorSet } from '../policy/acr.ts';
import type { StepUpStatus, StepUpsTable } from '../store/schema.ts';

/** A proven factor inside a step-up transaction. */
export interface ProvenFactor {
  type: string;
  factorId: string;
  amr: string[];
  at: number;
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
 * The first alternative that is fully proven AND whose proof reaches the required acr. The
 * acr comes from what was actually proven (a synced passkey proves `user` but not `hwk`, so
 * it cannot complete an aal3 policy), never from what the policy hoped for.
 */
export function satisfiedAlternative(anyOf: string[][], proven: ProvenFactor[], requiredAcr: string): string[] | undefined {
  const have = new Set(proven.map((p) => p.type));
  return anyOf.find((set) => {
    if (!set.every((t) => have.has(t))) return false;
    const amr = new Set(proven.filter((p) => set.includes(p.type)).flatMap((p) => p.amr));
    const reached = acrForFactorSet(set, { webauthnUserVerified: amr.has('user'), webauthnDeviceBound: amr.has('hwk') });
    return reached !== null && acrAtLeast(reached, requiredAcr);
  });
}
