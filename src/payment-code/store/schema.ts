import type { Generated } from 'kysely';

/**
 * The payment-code service's own tables (prefix `pc_`, so that pointing it at the gateway's
 * schema by mistake cannot collide with the gateway's tables). Instants are epoch
 * milliseconds; money is decimal text, never a float.
 */

export type ApiKeyRole = 'wallet' | 'acquirer';

export interface ApiKeysTable {
  id: string;
  name: string;
  role: ApiKeyRole;
  /** SHA-256 of the whole key (256 random bits: a fast hash is enough). */
  key_hash: string;
  created_at: number;
  revoked_at: number | null;
}

export type StepUpAction = 'payment_code.issue' | 'payment_code.offline_seed';
export type StepUpRecordStatus = 'pending' | 'token_received' | 'used' | 'failed';

/** A step-up this service requested at the gateway, and for whom. */
export interface StepUpsTable {
  /** The gateway's step-up id. */
  id: string;
  /** Who may complete it here: an API key id, or `demo:<hash>` for the demo page. */
  owner: string;
  action: StepUpAction;
  /** The gateway user id the wallet acts for; the token's `sub` must equal it. */
  subject: string;
  /** The step-up context sent to the gateway, canonical JSON. */
  context: string;
  status: StepUpRecordStatus;
  /** The step-up token once fetched, sealed; cleared when used. */
  token_sealed: string | null;
  /** Why it failed (the gateway's or the verifier's code). */
  failure: string | null;
  created_at: number;
  expires_at: number;
  finished_at: number | null;
}

export type CodeStatus = 'issued' | 'redeemed';

/** An online payment code (way 1) and its signed QR (way 3): one authorisation, redeemable once. */
export interface CodesTable {
  id: string;
  /** HMAC of the 18 digits under a key derived from the master key. */
  code_hmac: string;
  /** Nonce of the signed QR payload. */
  qr_nonce: string;
  /** The gateway user id (the token's `sub`). */
  subject: string;
  owner: string;
  amount_limit: string;
  currency: string;
  device_id: string;
  payee: string | null;
  stepup_id: string;
  token_jti: string;
  acr: string;
  status: CodeStatus;
  issued_at: number;
  expires_at: number;
  redeemed_at: number | null;
  redemption_id: string | null;
}

/** Which live code owns a code value: the primary key makes live codes unique. */
export interface LiveCodesTable {
  code_hmac: string;
  code_id: string;
  expires_at: number;
}

export interface OfflineSeedsTable {
  id: string;
  owner: string;
  subject: string;
  device_id: string;
  slot: string;
  /** The 32-byte seed, sealed (AAD `pc_offline_seeds.seed_sealed:<id>`). */
  seed_sealed: string;
  amount_limit: string;
  currency: string;
  max_codes: number;
  codes_used: number;
  period_seconds: number;
  /** Wrong codes in the current failure window (charged before each comparison). */
  failures: number;
  failure_window: number;
  stepup_id: string;
  token_jti: string;
  created_at: number;
  expires_at: number;
  revoked_at: number | null;
}

/** Which seed owns a device slot; a slot of a revoked or expired seed can be taken over. */
export interface DeviceSlotsTable {
  slot: string;
  seed_id: string;
  expires_at: number;
}

/** Each offline time step of a seed is accepted once. */
export interface OfflineUsesTable {
  seed_id: string;
  step: number;
  redemption_id: string;
  used_at: number;
}

export type RedemptionKind = 'online' | 'offline' | 'signed_qr';

export interface RedemptionsTable {
  id: string;
  kind: RedemptionKind;
  code_id: string | null;
  seed_id: string | null;
  subject: string;
  amount: string;
  currency: string;
  merchant: string;
  acquirer_key_id: string;
  redeemed_at: number;
}

export interface SigningKeysTable {
  kid: string;
  alg: 'EdDSA';
  /** PKCS#8 DER of the private key, sealed (AAD `pc_signing_keys.private_sealed:<kid>`). */
  private_sealed: string;
  public_jwk: string;
  status: 'active' | 'retired';
  created_at: number;
  retired_at: number | null;
}

/** The service's own tamper-evident event log (hash chain). */
export interface EventsTable {
  seq: number;
  at: number;
  type: string;
  actor: string | null;
  subject: string | null;
  request_id: string | null;
  data: string;
  prev_hash: string;
  hash: string;
}

export interface MetaTable {
  key: string;
  value: string;
}

export interface PaymentCodeDatabase {
  pc_meta: MetaTable;
  pc_api_keys: ApiKeysTable;
  pc_stepups: StepUpsTable;
  pc_codes: CodesTable;
  pc_live_codes: LiveCodesTable;
  pc_offline_seeds: OfflineSeedsTable;
  pc_device_slots: DeviceSlotsTable;
  pc_offline_uses: OfflineUsesTable;
  pc_redemptions: RedemptionsTable;
  pc_signing_keys: SigningKeysTable;
  pc_events: EventsTable;
}

export type { Generated };
