import type { Generated } from 'kysely';

/**
 * The one schema both dialects share. Conventions that keep SQLite and PostgreSQL alike:
 * instants are integer epoch milliseconds (`*_at`), booleans are 0/1 integers, structured
 * values are JSON text, ids are text.
 */
export interface UsersTable {
  id: string;
  /** NFKC-normalised, lower-cased login name. */
  username: string;
  display_name: string;
  /** JSON array of roles: admin | helpdesk | auditor. */
  roles: string;
  /** JSON array of group names (policy conditions). */
  groups: string;
  status: 'active' | 'disabled';
  created_at: number;
  updated_at: number;
}

export interface FactorsTable {
  id: string;
  user_id: string;
  /** snake_case factor type id: password, totp, sms_otp, hardware_otp, webauthn, recovery_code. */
  type: string;
  label: string;
  /** pending (enrolled, not confirmed) | active | disabled */
  status: 'pending' | 'active' | 'disabled';
  /** A verifier hash (argon2 PHC string) where the factor keeps one. */
  secret_hash: string | null;
  /** A sealed secret (crypto/seal) where the factor needs the secret itself (OTP seeds). */
  secret_sealed: string | null;
  /** Factor-specific public parameters as JSON. */
  params: string;
  /** Monotonic counter / last accepted time step, advanced by guarded updates only. */
  counter: number;
  failures: number;
  locked_until: number | null;
  created_at: number;
  updated_at: number;
  last_used_at: number | null;
}

export interface LoginThrottleTable {
  /** HMAC of the normalised login name: unknown names are throttled exactly like real ones. */
  key: string;
  failures: number;
  locked_until: number | null;
  last_failed_at: number;
}

export interface SessionsTable {
  /** SHA-256 of the session id; the id itself only lives in the cookie. */
  id_hash: string;
  user_id: string;
  csrf_token: string;
  created_at: number;
  last_seen_at: number;
  expires_at: number;
  auth_time: number;
  /** JSON array of RFC 8176 amr values proven in this session. */
  amr: string;
  /** The User-Agent the session was opened from (≤ 256 characters), for the user's device list; null before migration 041. */
  user_agent: string | null;
  /** The client address the session was opened from, for the user's device list. */
  ip: string | null;
}

export interface OneTimeTokensTable {
  /** SHA-256 of the token; the token itself is shown once. */
  id_hash: string;
  purpose: string;
  subject: string | null;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

export interface AuditLogTable {
  seq: number;
  at: number;
  type: string;
  actor: string | null;
  subject: string | null;
  ip: string | null;
  request_id: string | null;
  /** JSON object with event details; never secrets. */
  data: string;
  prev_hash: string;
  hash: string;
}

export interface NotificationOutboxTable {
  id: string;
  audit_seq: number;
  type: string;
  user_id: string;
  ip: string | null;
  at: number;
  /** The audit row's data (JSON; never secrets). */
  data: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: Generated<number>;
  next_attempt_at: number;
  claim: string | null;
  claimed_until: number | null;
  delivered_at: number | null;
  last_error: string | null;
}

export interface KnownDevicesTable {
  user_id: string;
  /** SHA-256 of the device cookie; the cookie value itself lives only in the browser. */
  device_hash: string;
  user_agent: string | null;
  first_seen_at: number;
  last_seen_at: number;
}

export interface MetaTable {
  key: string;
  value: string;
}

export interface SigningKeysTable {
  /** RFC 7638 JWK thumbprint of the public key. */
  kid: string;
  alg: 'ES256' | 'EdDSA';
  public_jwk: string;
  /** PKCS#8 DER private key, sealed with the master key (aad `signing_keys.private_sealed:<kid>`). */
  private_sealed: string;
  /**
   * active (signs) | retired (published until publish_until, never signs) | revoked
   * (withdrawn at once: `stepgate keys revoke`, never published or used again).
   */
  status: 'active' | 'retired' | 'revoked';
  created_at: number;
  retired_at: number | null;
  publish_until: number | null;
}

export type StepUpStatus = 'pending' | 'completed' | 'token_issued' | 'denied' | 'cancelled' | 'expired';

export interface StepUpsTable {
  id: string;
  client_id: string;
  user_id: string;
  action: string;
  /** JSON object: the exact thing being authorised. */
  context: string;
  /** Decimal string copied from context.amount (velocity sums). */
  amount: string | null;
  currency: string | null;
  binding_message: string | null;
  redirect_uri: string | null;
  state: string | null;
  status: StepUpStatus;
  policy_id: string;
  policy_version: number;
  /** JSON `anyOf`: alternatives of factor sets. */
  requirement: string;
  acr: string;
  token_ttl_seconds: number;
  max_age_seconds: number;
  /** SHA-256 of the one-time ticket. */
  ticket_hash: string;
  attempts: number;
  max_attempts: number;
  /** JSON array of proven factors: {type, factorId, amr, at}. */
  proven: string;
  /** JSON array of amr values proven so far. */
  amr: string;
  /** Optimistic-concurrency version for progress updates. */
  version: number;
  created_at: number;
  expires_at: number;
  completed_at: number | null;
  auth_time: number | null;
  token_issued_at: number | null;
  token_jti: string | null;
  last_polled_at: number | null;
  poll_interval_seconds: number;
}

export interface FactorChallengesTable {
  id: string;
  stepup_id: string;
  factor_type: string;
  factor_id: string | null;
  /** JSON from the factor module (hashes, public data); null when nothing is usable. */
  state: string | null;
  attempts: number;
  max_attempts: number;
  sends: number;
  created_at: number;
  last_sent_at: number;
  expires_at: number;
  consumed_at: number | null;
}

export interface RateLimitsTable {
  /** `<bucket>:<subject>:<window number>`. */
  key: string;
  count: number;
  expires_at: number;
}

/** WebAuthn: credential id → its factor row (unique across users; passkey sign-in looks it up). */
export interface WebAuthnCredentialsTable {
  /** base64url credential id. */
  credential_id: string;
  factor_id: string;
  user_id: string;
  created_at: number;
}

export interface PolicySetsTable {
  version: number;
  /** JSON of the whole policy set at this version. */
  document: string;
  created_at: number;
  created_by: string;
  comment: string;
}

export interface ClientsTable {
  /** `cli_…` from newId('cli'). */
  client_id: string;
  name: string;
  auth_method: 'client_secret_basic' | 'private_key_jwt';
  /** SHA-256 (hashToken) of the 256-bit client secret; null for private_key_jwt clients. The secret itself is shown once. */
  secret_hash: string | null;
  /** JSON JWKS of the client's public keys (private_key_jwt); never private or symmetric keys. */
  jwks: string | null;
  /** JSON array of action names the client may request step-up for (`payment_code.issue`). */
  allowed_actions: string;
  /** JSON array of exact redirect URIs. */
  redirect_uris: string;
  status: 'active' | 'disabled';
  created_at: number;
  updated_at: number;
  secret_rotated_at: number | null;
}

export interface ClientAssertionJtisTable {
  client_id: string;
  /** `jti` of an accepted private_key_jwt assertion: each is accepted once (primary key). */
  jti: string;
  /** When the assertion expires (plus clock skew); the row may be pruned after it. */
  expires_at: number;
}

/** A known value sealed under the master key (crypto/master-key-check.ts). */
export interface MasterKeyCheckTable {
  id: string;
  sealed: string;
  created_at: number;
}

export interface Database {
  clients: ClientsTable;
  client_assertion_jtis: ClientAssertionJtisTable;
  stepups: StepUpsTable;
  factor_challenges: FactorChallengesTable;
  rate_limits: RateLimitsTable;
  webauthn_credentials: WebAuthnCredentialsTable;
  policy_sets: PolicySetsTable;
  signing_keys: SigningKeysTable;
  users: UsersTable;
  factors: FactorsTable;
  login_throttle: LoginThrottleTable;
  sessions: SessionsTable;
  one_time_tokens: OneTimeTokensTable;
  audit_log: AuditLogTable;
  notification_outbox: NotificationOutboxTable;
  known_devices: KnownDevicesTable;
  meta: MetaTable;
  master_key_check: MasterKeyCheckTable;
  /** Rows used only by the store conformance suite. */
  store_probe: StoreProbeTable;
  sms_outbox: SmsOutboxTable;
  sms_send_counters: SmsSendCountersTable;
  sms_enrolment_codes: SmsEnrolmentCodesTable;
  hardware_tokens: HardwareTokensTable;
  hardware_token_imports: HardwareTokenImportsTable;
  hardware_token_bind_throttle: HardwareTokenBindThrottleTable;
  hardware_token_assign_throttle: HardwareTokenAssignThrottleTable;
}

export interface StoreProbeTable {
  id: string;
  value: number;
  used_at: number | null;
  note: Generated<string>;
}

/** Development SMS outbox (provider `outbox`, refused in production): the texts, codes included. */
export interface SmsOutboxTable {
  id: string;
  /** E.164 destination. */
  to_number: string;
  locale: string;
  /** stepup | enrolment */
  purpose: string;
  text: string;
  created_at: number;
}

/** One SMS send budget in one fixed window (src/sms/send-caps.ts). */
export interface SmsSendCountersTable {
  /** `<scope>:<window>:<window start ms>:<subject>`; the subject of a number budget is a keyed hash, never the number. */
  key: string;
  count: number;
  /** End of the window: the row can be pruned afterwards. */
  expires_at: number;
}

/** The ownership code of a phone being enrolled (one per pending sms_otp factor). */
export interface SmsEnrolmentCodesTable {
  factor_id: string;
  user_id: string;
  /** HMAC of the code; null while sending or after a failed send (nothing usable). */
  code_mac: string | null;
  attempts: number;
  max_attempts: number;
  sends: number;
  /** 0 after a failed send: the user may retry at once. */
  last_sent_at: number;
  expires_at: number;
  consumed_at: number | null;
}

// ---- hardware OTP tokens (issue 6) --------------------------------------------------------

/**
 * unassigned (in stock) → assigned (bound to a user; its `factors` row is what step-up
 * verifies) → lost | revoked (final). "locked" is not stored: it is the assigned token's
 * factor having reached its failure limit.
 */
export type HardwareTokenState = 'unassigned' | 'assigned' | 'lost' | 'revoked';

export interface HardwareTokensTable {
  /** `hwt_…` */
  id: string;
  /** Normalised serial (upper case, no spaces): unique, how people find and bind a token. */
  serial: string;
  manufacturer: string;
  model: string;
  /** hotp (event) | totp (time). */
  kind: 'hotp' | 'totp';
  /** SHA1 | SHA256 | SHA512 (RFC 4226/6238) | SM3 (GM/T 0021). */
  algorithm: string;
  digits: number;
  /** Time step of time tokens; 0 for event tokens. */
  period_seconds: number;
  /** Challenge-response (GM/T 0021 Q) tokens: the challenge length; null for the others. */
  challenge_length: number | null;
  /**
   * The seed, sealed with the master key (aad `hardware_tokens.seed_sealed:<id>`). Null once
   * the token is lost or revoked: a final state needs no seed, and a wiped seed cannot leak.
   */
  seed_sealed: string | null;
  /**
   * While not assigned: HOTP next counter / TOTP last accepted time step. While assigned
   * the factor row's counter is authoritative; it is copied back when the token leaves the user.
   */
  counter: number;
  /** Known clock offset of a time token, in steps (same copy-back rule as counter). */
  drift_steps: number;
  state: HardwareTokenState;
  user_id: string | null;
  /** The user's `factors` row while assigned. */
  factor_id: string | null;
  valid_from: number | null;
  valid_until: number | null;
  import_id: string;
  /** Failed self-service bind attempts against this serial (charged before comparing). */
  bind_failures: number;
  /** Failed resynchronisations in a row (helpdesk or self-service; charged before comparing). */
  resync_failures: number;
  /** Resync refused until then, after hardwareTokens.resyncMaxFailures failures. */
  resync_locked_until: number | null;
  /** Failed helpdesk assign/replace codes in a row for this token (migration 046). */
  assign_failures: number;
  /** Assignment refused until then, after hardwareTokens.assignMaxFailures failures. */
  assign_locked_until: number | null;
  created_at: number;
  updated_at: number;
  assigned_at: number | null;
}

export interface HardwareTokenImportsTable {
  /** `hwi_…` */
  id: string;
  created_at: number;
  /** User id, or `cli:<os user>`. */
  actor: string;
  source: 'api' | 'cli';
  file_name: string;
  /** SHA-256 (hex) of the uploaded file, to recognise a file imported twice. */
  file_sha256: string;
  format: 'pskc' | 'csv';
  encryption: 'none' | 'psk' | 'pbkdf2';
  /** completed (all tokens stored) | failed (nothing stored). */
  status: 'completed' | 'failed';
  token_count: number;
  problem_count: number;
  /** Why a failed import failed (an AppError code). */
  error_code: string | null;
}

/** Helpdesk assign/replace failures per acting operator (the audit actor). */
export interface HardwareTokenAssignThrottleTable {
  actor: string;
  failures: number;
  locked_until: number | null;
  last_charged_at: number;
}

export interface HardwareTokenBindThrottleTable {
  user_id: string;
  failures: number;
  locked_until: number | null;
  last_failed_at: number;
}
