/**
 * The one shape every factor module has (DESIGN.md §2). A factor is pure with respect to
 * storage: it receives the stored record, checks the input and returns an outcome plus a
 * state change (new hash, counter, last time step); the calling flow applies the change
 * with a guarded, atomic update and counts attempts before it calls `verify`.
 */

/** Factor type ids are snake_case literals and never renamed. */
export type FactorType = 'password' | 'sms_otp' | 'totp' | 'hardware_otp' | 'webauthn' | 'recovery_code';

/**
 * `direct`: the secret is checked in one call (password, TOTP, hardware OTP).
 * `challenge`: something must be started first (an SMS sent, a WebAuthn challenge issued).
 */
export type FactorKind = 'direct' | 'challenge';

/** RFC 8176 authentication method reference values we emit. */
export type Amr = 'pwd' | 'sms' | 'otp' | 'hwk' | 'swk' | 'user' | 'pin' | 'mfa';

export interface FactorDescriptor {
  kind: FactorKind;
  /** What a successful verification proves (token `amr`). */
  amr: readonly Amr[];
  /** Something the user has (counts towards aal2 on its own). */
  possession: boolean;
  /** Whether a user may hold several active factors of this type. */
  multiple: boolean;
  /**
   * The factor's own failure limit, instead of config `factors.maxFailures`/`lockSeconds`.
   * `lockSeconds: null` keeps it locked until something resets `failures` (a hardware
   * token's resync), rather than letting the lock run out.
   */
  lockout?: { maxFailures: number; lockSeconds: number | null };
}

/** A stored factor as a factor module sees it: read-only, already parsed. */
export interface FactorRecord {
  id: string;
  userId: string;
  type: string;
  status: 'pending' | 'active' | 'disabled';
  secretHash: string | null;
  secretSealed: string | null;
  params: Record<string, unknown>;
  counter: number;
}

export interface FactorContext {
  /** From the gateway clock; factors never read the time themselves. */
  now: Date;
}

/** Why a verification failed. `invalid` is the only reason ever shown to the user. */
export type VerifyFailure = 'invalid' | 'expired' | 'replayed' | 'locked' | 'not_enrolled';

export type VerifyOutcome<Change> =
  | { ok: true; amr: readonly Amr[]; change?: Change }
  | { ok: false; reason: VerifyFailure; change?: Change };

/**
 * A factor module. Optional capabilities (challenges, enrolment) are added by the modules
 * that need them; conformance is checked with `satisfies Factor<…>` at compile time.
 */
export interface Factor<Input = unknown, Change = unknown> {
  readonly type: FactorType;
  readonly descriptor: FactorDescriptor;
  /**
   * Checks `input` against `record`. `record` is undefined when the user has no such
   * factor: a factor that must not reveal that (password) still does the same work.
   */
  verify(record: FactorRecord | undefined, input: Input, ctx: FactorContext): Promise<VerifyOutcome<Change>>;
  /** Challenge factors: start a challenge (send the SMS, issue WebAuthn options). */
  startChallenge?(record: FactorRecord, ctx: FactorContext): Promise<unknown>;
}

/** The registry: factor modules by type id, all of the same shape. */
export type FactorRegistry = ReadonlyMap<FactorType, Factor>;

export function factorRegistry(...factors: Factor[]): FactorRegistry {
  const map = new Map<FactorType, Factor>();
  for (const f of factors) {
    if (map.has(f.type)) throw new TypeError(`factor type ${f.type} registered twice`);
    map.set(f.type, f);
  }
  return map;
}
