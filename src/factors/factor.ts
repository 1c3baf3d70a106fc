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
  /** Challenge factors: the limits the flow enforces on every challenge. */
  challenge?: ChallengeLimits;
  /**
   * `verify()` is a few microseconds of CPU and nothing else (no I/O, no worker, no wait):
   * the flow may compare inside the transaction that charged the attempt and write the
   * outcome with the same commit (src/flows/verify-stepup-factor.ts). Never for argon2 or
   * anything slow: the transaction holds the step-up's lock (SQLite: the write lock).
   */
  comparesInline?: boolean;
}

export interface ChallengeLimits {
  /** How long a challenge (a sent code, a WebAuthn challenge) stays usable. */
  ttlSeconds: number;
  /** Guesses per challenge; a resend keeps the count. */
  maxAttempts: number;
  /** Minimum time between two sends within one step-up. */
  resendCooldownSeconds: number;
  /** Sends per step-up (first send included). */
  maxSends: number;
}

/** What a challenge is for: today a step-up transaction. */
export interface ChallengePurpose {
  kind: 'stepup';
  stepupId: string;
  clientId: string;
  action: string;
  context: Record<string, unknown>;
  bindingMessage: string | null;
  /** The acr the step-up must reach: a factor offers only what can reach it (WebAuthn: device-bound credentials for aal3). */
  acr: string;
}

export interface ChallengeContext {
  now: Date;
  userId: string;
  /** The user's language for anything sent to them ('en' | 'zh-CN'). */
  locale: string;
  purpose: ChallengePurpose;
  /** The factor's state from the previous send in this step-up (a resend), if any. */
  previous?: Record<string, unknown> | undefined;
}

export interface ChallengeStart {
  /** Returned to the client (WebAuthn options; the masked phone number). */
  publicData: Record<string, unknown>;
  /** Stored by the flow until the challenge is used or expires. Hashes and public data only. */
  state: Record<string, unknown>;
  /** The factor the challenge was issued for, when it is one of several (the phone an SMS went to). */
  factorId?: string;
}

/** A live challenge, as `verify` receives it. */
export interface LiveChallenge {
  state: Record<string, unknown>;
  factorId: string | null;
  createdAt: Date;
  expiresAt: Date;
}

/** A stored factor as a factor module sees it: read-only, already parsed. */
export interface FactorRecord {
  id: string;
  userId: string;
  type: string;
  label: string;
  status: 'pending' | 'active' | 'disabled';
  secretHash: string | null;
  secretSealed: string | null;
  params: Record<string, unknown>;
  counter: number;
}

export interface FactorContext {
  /** From the gateway clock; factors never read the time themselves. */
  now: Date;
  /** Challenge factors: the live challenge of this step-up, already charged one attempt. */
  challenge?: LiveChallenge | undefined;
  /** The step-up being verified, so a factor can check what its challenge was bound to (SMS codes). */
  stepupId?: string | undefined;
}

/** Why a verification failed. `invalid` is the only reason ever shown to the user. */
export type VerifyFailure = 'invalid' | 'expired' | 'replayed' | 'locked' | 'not_enrolled';

export type VerifyOutcome<Change> =
  | {
      ok: true;
      amr: readonly Amr[];
      /**
       * The acr this one proof reaches on its own when that is more than its factor type
       * implies (WebAuthn with UV on a device-bound credential: aal3). Never a guess.
       */
      acr?: string;
      change?: Change;
    }
  | {
      ok: false;
      reason: VerifyFailure;
      /** A finer reason for the audit log (`origin_mismatch`, `counter_regressed`); never shown to the user. */
      detail?: string;
      /** Applied even though the proof failed (a credential flagged as possibly cloned). */
      change?: Change;
    };

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
  /**
   * Challenge factors: start a challenge (send the SMS, issue WebAuthn options) for the
   * user's active factors of this type (one, if the caller named it). Throw an AppError
   * (`service_unavailable`, `too_many_requests`…) when nothing was sent; the flow then leaves
   * nothing usable behind.
   */
  startChallenge?(records: readonly FactorRecord[], ctx: ChallengeContext): Promise<ChallengeStart>;
  /**
   * Which of the user's active factors of this type `input` addresses, when that is not
   * simply the one named by `factorId` (WebAuthn: the credential id in the assertion; SMS:
   * the phone the live challenge went to). Undefined: none of them.
   */
  resolveFactor?(records: readonly FactorRecord[], input: unknown, challenge: LiveChallenge | undefined): FactorRecord | undefined;
  /**
   * Factors whose verification uses a scarce resource (password: an argon2 slot) run the
   * whole verification inside `admit`, which refuses at once (an AppError, 503) when the
   * resource is exhausted. The flow calls it before anything is charged, so a refusal
   * writes nothing.
   */
  admit?<T>(work: () => Promise<T>): Promise<T>;
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
