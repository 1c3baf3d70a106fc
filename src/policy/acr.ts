/**
 * Authentication context classes (DESIGN.md §1 "ACR") and what a set of factors can reach.
 *
 * - aal1: one factor.
 * - aal2: a possession factor, or two (different) factors.
 * - aal3: WebAuthn with user verification on a device-bound (non-synced) credential —
 *   phishing-resistant and hardware-bound.
 */

export const ACR_VALUES = ['urn:stepgate:aal1', 'urn:stepgate:aal2', 'urn:stepgate:aal3'] as const;
export type AcrValue = (typeof ACR_VALUES)[number];

/** The factor types Stepgate ships. The registry passes the live list to validation. */
export const STANDARD_FACTOR_TYPES = ['password', 'totp', 'sms_otp', 'hardware_otp', 'webauthn', 'recovery_code'] as const;

/** Factor types that prove possession of a device. A new factor type declares itself here via `facts`. */
export const POSSESSION_FACTOR_TYPES: readonly string[] = ['totp', 'sms_otp', 'hardware_otp', 'webauthn'];

/** What was (or, for validation, could be) proven beyond the factor types themselves. */
export interface AcrFacts {
  /** The WebAuthn assertion had the UV flag (fingerprint, face, device PIN). */
  webauthnUserVerified?: boolean;
  /** The WebAuthn credential is device-bound: not backup-eligible, so never synced to a cloud. */
  webauthnDeviceBound?: boolean;
  /** Overrides POSSESSION_FACTOR_TYPES, so factor types added later classify themselves. */
  possessionFactorTypes?: readonly string[];
}

/** The best case: what a factor set can reach at most. Used to validate policies. */
export const BEST_CASE_ACR_FACTS: AcrFacts = Object.freeze({ webauthnUserVerified: true, webauthnDeviceBound: true });

export function isAcrValue(value: unknown): value is AcrValue {
  return typeof value === 'string' && (ACR_VALUES as readonly string[]).includes(value);
}

/** The level of an ACR value (1–3), or 0 when it is not one of ours. */
export function acrLevel(value: string): number {
  return (ACR_VALUES as readonly string[]).indexOf(value) + 1;
}

/** `a` is at least as strong as `b`. Unknown values are never "at least" anything. */
export function acrAtLeast(a: string, b: string): boolean {
  const la = acrLevel(a);
  const lb = acrLevel(b);
  return la > 0 && lb > 0 && la >= lb;
}

/**
 * The ACR a set of proven factor types yields, or `null` for the empty set. Conservative by
 * default: without `facts`, WebAuthn counts as a possession factor only (aal2).
 */
export function acrForFactorSet(types: readonly string[], facts: AcrFacts = {}): AcrValue | null {
  const distinct = new Set(types);
  if (distinct.size === 0) return null;
  if (distinct.has('webauthn') && facts.webauthnUserVerified === true && facts.webauthnDeviceBound === true) {
    return 'urn:stepgate:aal3';
  }
  const possession = facts.possessionFactorTypes ?? POSSESSION_FACTOR_TYPES;
  if (distinct.size >= 2 || [...distinct].some((t) => possession.includes(t))) return 'urn:stepgate:aal2';
  return 'urn:stepgate:aal1';
}
