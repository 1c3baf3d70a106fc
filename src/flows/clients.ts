import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { createLocalJWKSet, decodeJwt, errors as joseErrors, type JSONWebKeySet, type JWK, jwtVerify } from 'jose';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { hashToken, newId, newSecretToken } from '../crypto/ids.ts';
import { AppError, type InvalidParam } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import type { Executor } from '../store/database.ts';
import { insertOnce } from '../store/primitives.ts';
import type { ClientsTable } from '../store/schema.ts';
import type { AuditActor } from './users.ts';
import { FixedSql } from '../store/fixed-sql.ts';
import { jwsDuplicateMember } from '../verifier/strict-json.ts';

/**
 * Relying-service clients (DESIGN.md §1): who may ask for step-up, for which actions, where
 * users may be sent back to, and how the client proves who it is.
 *
 * Secrets: a client secret is 256 bits from newSecretToken(), shown once, stored as its
 * SHA-256 (hashToken). At that entropy a fast hash is as strong as a slow or keyed one
 * (nothing to brute-force); an HMAC under a master-key-derived key was rejected because
 * `deriveKey` changes when the master key is rotated, which would silently invalidate every
 * client secret.
 */
export type ClientAuthMethod = 'client_secret_basic' | 'private_key_jwt';
export const CLIENT_AUTH_METHODS: readonly ClientAuthMethod[] = ['client_secret_basic', 'private_key_jwt'];

/**
 * Algorithms accepted on private_key_jwt assertions. RS256 (PKCS#1 v1.5) is deliberately
 * absent, as everywhere in Stepgate; PS256 is the RSA option. `none` and HMAC algorithms
 * can never verify against a registered public key and are refused before any key is tried.
 */
export const CLIENT_ASSERTION_ALGS = ['ES256', 'EdDSA', 'PS256'] as const;
/** An assertion may be valid for at most this long (`exp - iat`, and `exp - now`). */
export const MAX_ASSERTION_LIFETIME_SECONDS = 60;
/** Clock skew tolerated between the client and the gateway. */
export const ASSERTION_CLOCK_SKEW_SECONDS = 5;
/** How long past its expiry an assertion's jti is still remembered: more than any clock difference between gateway processes. */
export const ASSERTION_JTI_PRUNE_GRACE_SECONDS = 300;
export const MAX_ASSERTION_LENGTH = 8192;

export const MAX_CLIENT_NAME_LENGTH = 100;
export const MAX_ACTIONS = 50;
export const MAX_REDIRECT_URIS = 20;
export const MAX_JWKS_KEYS = 10;
const MAX_CLIENT_ID_LENGTH = 128;
const MAX_JTI_LENGTH = 256;
const MAX_REDIRECT_URI_LENGTH = 2000;
const ACTION = /^[a-z][a-z0-9_]{0,63}(?:\.[a-z][a-z0-9_]{0,63}){0,7}$/;

export type ClientStatus = 'active' | 'disabled';

export interface Client {
  clientId: string;
  name: string;
  authMethod: ClientAuthMethod;
  allowedActions: string[];
  redirectUris: string[];
  /** The registered public keys (private_key_jwt), else null. */
  jwks: JSONWebKeySet | null;
  status: ClientStatus;
  createdAt: Date;
  updatedAt: Date;
  secretRotatedAt: Date | null;
}

export interface CreateClientInput {
  name: string;
  actions: string[];
  redirectUris?: string[];
  authMethod?: ClientAuthMethod;
  /** The client's public JWKS: required for private_key_jwt, refused otherwise. */
  jwks?: unknown;
}

export interface CreatedClient {
  client: Client;
  /** Only for client_secret_basic; this is the one and only time it is available. */
  clientSecret?: string;
}

type ClientRow = ClientsTable;

function toClient(row: ClientRow): Client {
  return {
    clientId: row.client_id,
    name: row.name,
    authMethod: row.auth_method,
    allowedActions: JSON.parse(row.allowed_actions) as string[],
    redirectUris: JSON.parse(row.redirect_uris) as string[],
    jwks: row.jwks === null ? null : (JSON.parse(row.jwks) as JSONWebKeySet),
    status: row.status,
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
    secretRotatedAt: row.secret_rotated_at === null ? null : new Date(row.secret_rotated_at),
  };
}

/** The public representation (admin API, CLI --json). Never carries a secret or its hash. */
export function clientResource(client: Client): Record<string, unknown> {
  return {
    client_id: client.clientId,
    name: client.name,
    auth_method: client.authMethod,
    allowed_actions: client.allowedActions,
    redirect_uris: client.redirectUris,
    jwks: client.jwks,
    status: client.status,
    created_at: client.createdAt.toISOString(),
    updated_at: client.updatedAt.toISOString(),
    secret_rotated_at: client.secretRotatedAt === null ? null : client.secretRotatedAt.toISOString(),
  };
}

// ---------------------------------------------------------------------------------------
// Validation. Pointers name the admin API's fields (snake_case), so the HTTP layer passes
// them through unchanged and the CLI maps them to its options.

function hasControlChars(s: string): boolean {
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (c < 0x20 || c === 0x7f || (c >= 0x80 && c < 0xa0)) return true;
  }
  return false;
}

function validateName(name: unknown, problems: InvalidParam[]): string {
  if (typeof name !== 'string') {
    problems.push({ pointer: '/name', reason: 'must be a string' });
    return '';
  }
  const trimmed = name.normalize('NFC').trim();
  if (trimmed.length === 0) problems.push({ pointer: '/name', reason: 'must not be empty' });
  else if (trimmed.length > MAX_CLIENT_NAME_LENGTH) problems.push({ pointer: '/name', reason: `at most ${MAX_CLIENT_NAME_LENGTH} characters` });
  else if (hasControlChars(trimmed)) problems.push({ pointer: '/name', reason: 'must not contain control characters' });
  return trimmed;
}

function validateActions(actions: unknown, problems: InvalidParam[]): string[] {
  if (!Array.isArray(actions)) {
    problems.push({ pointer: '/allowed_actions', reason: 'must be an array of action names' });
    return [];
  }
  if (actions.length === 0) problems.push({ pointer: '/allowed_actions', reason: 'name at least one action' });
  if (actions.length > MAX_ACTIONS) problems.push({ pointer: '/allowed_actions', reason: `at most ${MAX_ACTIONS} actions` });
  actions.forEach((a, i) => {
    if (typeof a !== 'string' || !ACTION.test(a)) {
      problems.push({ pointer: `/allowed_actions/${i}`, reason: 'must be a dotted lower-case action name such as payment_code.issue' });
    }
  });
  return [...new Set(actions.filter((a): a is string => typeof a === 'string'))];
}

/** Why a redirect URI is refused, or undefined when it is acceptable. */
export function redirectUriProblem(uri: string, mode: 'development' | 'production'): string | undefined {
  if (uri.length > MAX_REDIRECT_URI_LENGTH) return `at most ${MAX_REDIRECT_URI_LENGTH} characters`;
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return 'must be an absolute URL';
  }
  if (uri.includes('#')) return 'must not contain a fragment (RFC 6749 §3.1.2)';
  if (url.username !== '' || url.password !== '') return 'must not contain user information';
  if (uri.includes('*')) return 'wildcards are not allowed: register every URI exactly';
  const localHttp = url.protocol === 'http:' && (url.hostname === 'localhost' || url.hostname === '127.0.0.1');
  if (url.protocol !== 'https:' && !(localHttp && mode === 'development')) {
    return mode === 'development' ? 'must be https (http only for localhost or 127.0.0.1, in development mode)' : 'must be https';
  }
  // Redirect URIs are compared as exact strings; only the canonical spelling can match.
  if (url.href !== uri) return `must be written in canonical form: ${url.href}`;
  return undefined;
}

function validateRedirectUris(uris: unknown, mode: 'development' | 'production', problems: InvalidParam[]): string[] {
  if (uris === undefined) return [];
  if (!Array.isArray(uris)) {
    problems.push({ pointer: '/redirect_uris', reason: 'must be an array of URLs' });
    return [];
  }
  if (uris.length > MAX_REDIRECT_URIS) problems.push({ pointer: '/redirect_uris', reason: `at most ${MAX_REDIRECT_URIS} URIs` });
  uris.forEach((u, i) => {
    const reason = typeof u === 'string' ? redirectUriProblem(u, mode) : 'must be a string';
    if (reason !== undefined) problems.push({ pointer: `/redirect_uris/${i}`, reason });
  });
  return [...new Set(uris.filter((u): u is string => typeof u === 'string'))];
}

/** Members that carry private or symmetric key material (RFC 7517/7518). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
/** Members kept when a key is stored; everything else (x5c, key_ops, ext…) is dropped. */
const KEPT_MEMBERS = ['kty', 'kid', 'use', 'alg', 'crv', 'x', 'y', 'n', 'e'] as const;
const ALG_FOR_KEY: Record<string, string> = { 'EC:P-256': 'ES256', 'OKP:Ed25519': 'EdDSA', RSA: 'PS256' };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks a client JWKS and returns the stored form (public members only). Private members
 * and symmetric keys are refused outright, never silently stripped: whoever sent them has a
 * leaked key to replace. `base` is the pointer of the JWKS in the request body.
 */
export function validateClientJwks(value: unknown, base: string, problems: InvalidParam[]): JSONWebKeySet | undefined {
  if (!isRecord(value) || !Array.isArray(value.keys)) {
    problems.push({ pointer: base, reason: 'must be a JWK Set: {"keys": [...]}' });
    return undefined;
  }
  const keys = value.keys as unknown[];
  if (keys.length === 0) problems.push({ pointer: `${base}/keys`, reason: 'must hold at least one key' });
  if (keys.length > MAX_JWKS_KEYS) problems.push({ pointer: `${base}/keys`, reason: `at most ${MAX_JWKS_KEYS} keys` });
  const before = problems.length;
  const kids = new Set<string>();
  const out: JWK[] = [];
  keys.forEach((key, i) => {
    const at = `${base}/keys/${i}`;
    if (!isRecord(key)) {
      problems.push({ pointer: at, reason: 'must be a JWK object' });
      return;
    }
    const privateMembers = PRIVATE_MEMBERS.filter((m) => key[m] !== undefined);
    if (key.kty === 'oct') {
      problems.push({ pointer: `${at}/kty`, reason: 'symmetric keys (kty "oct") are not accepted: register public keys only' });
      return;
    }
    if (privateMembers.length > 0) {
      for (const m of privateMembers) {
        problems.push({ pointer: `${at}/${m}`, reason: 'private key material must never leave the client: register the public key only (and replace this key, it has been disclosed)' });
      }
      return;
    }
    if (key.kty !== 'EC' && key.kty !== 'OKP' && key.kty !== 'RSA') {
      problems.push({ pointer: `${at}/kty`, reason: 'must be EC (P-256), OKP (Ed25519) or RSA (PS256)' });
      return;
    }
    for (const m of KEPT_MEMBERS) {
      if (key[m] !== undefined && typeof key[m] !== 'string') problems.push({ pointer: `${at}/${m}`, reason: 'must be a string' });
    }
    const shape = key.kty === 'RSA' ? 'RSA' : `${key.kty}:${String(key.crv)}`;
    const alg = ALG_FOR_KEY[shape];
    if (alg === undefined) {
      problems.push({ pointer: `${at}/crv`, reason: key.kty === 'EC' ? 'EC keys must use crv P-256 (ES256)' : 'OKP keys must use crv Ed25519 (EdDSA)' });
      return;
    }
    if (key.alg !== undefined && key.alg !== alg) {
      problems.push({ pointer: `${at}/alg`, reason: `this key can only be used with ${alg}; accepted algorithms are ${CLIENT_ASSERTION_ALGS.join(', ')}` });
    }
    if (key.use !== undefined && key.use !== 'sig') problems.push({ pointer: `${at}/use`, reason: 'must be "sig"' });
    if (key.kid !== undefined) {
      if (typeof key.kid !== 'string' || key.kid.length === 0 || key.kid.length > 200) {
        problems.push({ pointer: `${at}/kid`, reason: 'must be 1 to 200 characters' });
      } else if (kids.has(key.kid)) {
        problems.push({ pointer: `${at}/kid`, reason: 'duplicate kid' });
      } else {
        kids.add(key.kid);
      }
    } else if (keys.length > 1) {
      problems.push({ pointer: `${at}/kid`, reason: 'every key needs a kid when the set holds more than one key' });
    }
    const kept: Record<string, string> = {};
    for (const m of KEPT_MEMBERS) if (typeof key[m] === 'string') kept[m] = key[m];
    try {
      const publicKey = createPublicKey({ key: kept as JsonWebKey, format: 'jwk' });
      const bits = publicKey.asymmetricKeyDetails?.modulusLength;
      if (key.kty === 'RSA' && (bits === undefined || bits < 2048)) {
        problems.push({ pointer: `${at}/n`, reason: 'RSA keys must be at least 2048 bits' });
      }
    } catch {
      problems.push({ pointer: at, reason: 'is not a valid public key' });
      return;
    }
    out.push(kept as JWK);
  });
  return problems.length === before ? { keys: out } : undefined;
}

function fail(problems: InvalidParam[]): never {
  throw new AppError('validation_failed', { detail: 'The client registration is invalid.', invalidParams: problems });
}

// ---------------------------------------------------------------------------------------
// Use cases. Every change is one transaction with its audit event.

async function readRow(executor: Executor, clientId: string): Promise<ClientRow | undefined> {
  if (clientId.length === 0 || clientId.length > MAX_CLIENT_ID_LENGTH) return undefined;
  return CLIENT_BY_ID.first(executor, [clientId]);
}

/** Every client-authenticated request reads its client (fixed SQL, see src/store/fixed-sql.ts). */
const CLIENT_BY_ID = new FixedSql<ClientRow>('select * from "clients" where "client_id" = ?');

/** The operator's reason, when the change was made with one (the console asks for it). */
function whyOf(who: AuditActor & { reason?: string }): { reason?: string } {
  return who.reason === undefined ? {} : { reason: who.reason };
}

function auditBase(who: AuditActor, clientId: string) {
  return { actor: who.actor, subject: clientId, ip: who.ip ?? null, requestId: who.requestId ?? null };
}

function kidsOf(jwks: JSONWebKeySet | null | undefined): (string | null)[] {
  return (jwks?.keys ?? []).map((k) => k.kid ?? null);
}

export async function createClient(gw: Gateway, input: CreateClientInput, who: AuditActor & { reason?: string }): Promise<CreatedClient> {
  const problems: InvalidParam[] = [];
  const name = validateName(input.name, problems);
  const actions = validateActions(input.actions, problems);
  const redirectUris = validateRedirectUris(input.redirectUris, gw.config.mode, problems);
  const authMethod = input.authMethod ?? 'client_secret_basic';
  if (!CLIENT_AUTH_METHODS.includes(authMethod)) {
    problems.push({ pointer: '/auth_method', reason: `must be one of ${CLIENT_AUTH_METHODS.join(', ')}` });
  }
  let jwks: JSONWebKeySet | undefined;
  if (authMethod === 'private_key_jwt') {
    if (input.jwks === undefined) problems.push({ pointer: '/jwks', reason: 'required for private_key_jwt: the public keys the client signs its assertions with' });
    else jwks = validateClientJwks(input.jwks, '/jwks', problems);
  } else if (input.jwks !== undefined) {
    problems.push({ pointer: '/jwks', reason: 'only for auth_method private_key_jwt' });
  }
  if (problems.length > 0) fail(problems);

  const nowMs = gw.clock.now().getTime();
  const clientSecret = authMethod === 'client_secret_basic' ? newSecretToken() : undefined;
  const row: ClientRow = {
    client_id: newId('cli'),
    name,
    auth_method: authMethod,
    secret_hash: clientSecret === undefined ? null : hashToken(clientSecret),
    jwks: jwks === undefined ? null : JSON.stringify(jwks),
    allowed_actions: JSON.stringify(actions),
    redirect_uris: JSON.stringify(redirectUris),
    status: 'active',
    created_at: nowMs,
    updated_at: nowMs,
    secret_rotated_at: null,
  };
  await gw.store.db.transaction().execute(async (tx) => {
    await tx.insertInto('clients').values(row).execute();
    await gw.audit.append(tx, {
      type: 'client.created',
      ...auditBase(who, row.client_id),
      data: { name, authMethod, allowedActions: actions, redirectUris, jwkKids: kidsOf(jwks), ...whyOf(who) },
    });
  });
  const client = toClient(row);
  return clientSecret === undefined ? { client } : { client, clientSecret };
}

export async function getClient(gw: Gateway, clientId: string): Promise<Client> {
  const row = await readRow(gw.store.db, clientId);
  if (row === undefined) throw new AppError('not_found', { detail: 'No such client.' });
  return toClient(row);
}

export async function listClients(gw: Gateway): Promise<Client[]> {
  const rows = await gw.store.db.selectFrom('clients').selectAll().orderBy('created_at').orderBy('client_id').execute();
  return rows.map(toClient);
}

/**
 * Explains why a guarded update of an existing client matched no row: the client is
 * missing, disabled, or uses the other authentication method.
 */
async function refusal(executor: Executor, clientId: string, needs: ClientAuthMethod): Promise<AppError> {
  const row = await readRow(executor, clientId);
  if (row === undefined) return new AppError('not_found', { detail: 'No such client.' });
  if (row.status !== 'active') return new AppError('conflict', { detail: 'The client is disabled.' });
  if (row.auth_method !== needs) return new AppError('conflict', { detail: `The client authenticates with ${row.auth_method}, not ${needs}.` });
  return new AppError('conflict', { detail: 'The client changed concurrently; try again.' });
}

/**
 * Replaces the client's secret. The old secret stops working at once (there is no overlap
 * window): deploy the new one to the client right after rotating.
 */
export async function rotateClientSecret(gw: Gateway, clientId: string, who: AuditActor & { reason?: string }): Promise<{ client: Client; clientSecret: string }> {
  const clientSecret = newSecretToken();
  const nowMs = gw.clock.now().getTime();
  const row = await gw.store.db.transaction().execute(async (tx) => {
    const updated = await tx
      .updateTable('clients')
      .set({ secret_hash: hashToken(clientSecret), secret_rotated_at: nowMs, updated_at: nowMs })
      .where('client_id', '=', clientId)
      .where('status', '=', 'active')
      .where('auth_method', '=', 'client_secret_basic')
      .returningAll()
      .executeTakeFirst();
    if (updated === undefined) throw await refusal(tx, clientId, 'client_secret_basic');
    await gw.audit.append(tx, { type: 'client.secret_rotated', ...auditBase(who, clientId), data: { name: updated.name, ...whyOf(who) } });
    return updated;
  });
  return { client: toClient(row), clientSecret };
}

/** Replaces the registered JWKS of a private_key_jwt client (key rotation on the client side). */
export async function setClientJwks(gw: Gateway, clientId: string, jwks: unknown, who: AuditActor & { reason?: string }): Promise<Client> {
  const problems: InvalidParam[] = [];
  const valid = validateClientJwks(jwks, '', problems);
  if (valid === undefined) fail(problems);
  const nowMs = gw.clock.now().getTime();
  const row = await gw.store.db.transaction().execute(async (tx) => {
    const updated = await tx
      .updateTable('clients')
      .set({ jwks: JSON.stringify(valid), updated_at: nowMs })
      .where('client_id', '=', clientId)
      .where('status', '=', 'active')
      .where('auth_method', '=', 'private_key_jwt')
      .returningAll()
      .executeTakeFirst();
    if (updated === undefined) throw await refusal(tx, clientId, 'private_key_jwt');
    await gw.audit.append(tx, { type: 'client.jwks_updated', ...auditBase(who, clientId), data: { jwkKids: kidsOf(valid), ...whyOf(who) } });
    return updated;
  });
  return toClient(row);
}

/**
 * Disables a client: its credentials stop working at once. Disabling a disabled client
 * changes nothing and records nothing.
 */
export async function disableClient(gw: Gateway, clientId: string, who: AuditActor & { reason?: string }): Promise<Client> {
  const nowMs = gw.clock.now().getTime();
  const row = await gw.store.db.transaction().execute(async (tx) => {
    const updated = await tx
      .updateTable('clients')
      .set({ status: 'disabled', updated_at: nowMs })
      .where('client_id', '=', clientId)
      .where('status', '=', 'active')
      .returningAll()
      .executeTakeFirst();
    if (updated === undefined) {
      const current = await readRow(tx, clientId);
      if (current === undefined) throw new AppError('not_found', { detail: 'No such client.' });
      return current;
    }
    await gw.audit.append(tx, { type: 'client.disabled', ...auditBase(who, clientId), data: { name: updated.name, ...whyOf(who) } });
    return updated;
  });
  return toClient(row);
}

// ---------------------------------------------------------------------------------------
// Client authentication. Expected failures are results, not exceptions: the HTTP layer
// turns every one of them into the same 401 invalid_client, and logs the reason.

/** What an authenticated request knows about its client. */
export interface AuthenticatedClient {
  clientId: string;
  name: string;
  authMethod: ClientAuthMethod;
  allowedActions: string[];
  redirectUris: string[];
}

export type ClientAuthResult =
  | { ok: true; client: AuthenticatedClient }
  | { ok: false; reason: string; clientId?: string };

function authenticated(row: ClientRow): ClientAuthResult {
  return {
    ok: true,
    client: {
      clientId: row.client_id,
      name: row.name,
      authMethod: row.auth_method,
      allowedActions: JSON.parse(row.allowed_actions) as string[],
      redirectUris: JSON.parse(row.redirect_uris) as string[],
    },
  };
}

/** Compared against when the client is unknown, so that case costs the same work. */
const DUMMY_SECRET_HASH = hashToken('stepgate:no-such-client');

/** client_secret_basic: constant-time comparison of the secret's hash. */
export async function verifyClientSecret(gw: Gateway, clientId: string, secret: string): Promise<ClientAuthResult> {
  const row = await readRow(gw.store.db, clientId);
  const usable = row !== undefined && row.status === 'active' && row.auth_method === 'client_secret_basic' && row.secret_hash !== null;
  const matches = constantTimeEqual(hashToken(secret), usable ? (row.secret_hash as string) : DUMMY_SECRET_HASH);
  if (row === undefined) return { ok: false, reason: 'unknown client' };
  if (!usable) return { ok: false, reason: row.status !== 'active' ? 'client disabled' : 'client does not use client_secret_basic', clientId };
  if (!matches) return { ok: false, reason: 'wrong client secret', clientId };
  return authenticated(row);
}

/**
 * The audiences an assertion may name: the generic token endpoint URL, or the issuer
 * identifier (the public URL). RFC 7523 §3 lets the server choose; both identify this gateway.
 */
export function assertionAudiences(gw: Gateway): string[] {
  const issuer = gw.config.http.publicUrl.replace(/\/+$/, '');
  return [`${issuer}/v1/stepup/token`, issuer];
}

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/**
 * private_key_jwt (RFC 7523 §2.2, §3): the assertion is signed by one of the client's
 * registered keys with an accepted algorithm; `iss` = `sub` = client id; `aud` names this
 * gateway and nothing else; `exp` at most 60 s ahead (and `exp - iat` ≤ 60 s when `iat` is given); `jti`
 * accepted once — the single-use insert is the last check, so a rejected assertion does not
 * burn its jti.
 */
export async function verifyClientAssertion(gw: Gateway, assertion: string, claimedClientId?: string): Promise<ClientAuthResult> {
  if (assertion.length > MAX_ASSERTION_LENGTH || !COMPACT_JWS.test(assertion)) return { ok: false, reason: 'malformed assertion' };
  // jose keeps the last of two "iss" (or "aud", "alg"…); we would check one value and a log or proxy might read the other.
  const duplicate = jwsDuplicateMember(assertion);
  if (duplicate !== undefined) return { ok: false, reason: `assertion ${duplicate.part} repeats a member (${duplicate.pointer})` };
  let clientId: unknown;
  let subject: unknown;
  try {
    const unverified = decodeJwt(assertion);
    clientId = unverified.iss;
    subject = unverified.sub;
  } catch {
    return { ok: false, reason: 'malformed assertion' };
  }
  if (typeof clientId !== 'string' || clientId.length === 0 || clientId.length > MAX_CLIENT_ID_LENGTH) {
    return { ok: false, reason: 'assertion has no usable iss' };
  }
  if (subject !== clientId) return { ok: false, reason: 'assertion sub differs from iss', clientId };
  if (claimedClientId !== undefined && claimedClientId !== clientId) return { ok: false, reason: 'client_id differs from the assertion iss', clientId };

  const row = await readRow(gw.store.db, clientId);
  if (row === undefined) return { ok: false, reason: 'unknown client' };
  if (row.status !== 'active') return { ok: false, reason: 'client disabled', clientId };
  if (row.auth_method !== 'private_key_jwt' || row.jwks === null) return { ok: false, reason: 'client does not use private_key_jwt', clientId };

  const now = gw.clock.now();
  const nowSeconds = Math.floor(now.getTime() / 1000);
  let exp: number;
  let iat: number | undefined;
  let jti: unknown;
  let aud: unknown;
  try {
    const { payload } = await jwtVerify(assertion, createLocalJWKSet(JSON.parse(row.jwks) as JSONWebKeySet), {
      algorithms: [...CLIENT_ASSERTION_ALGS],
      issuer: clientId,
      subject: clientId,
      audience: assertionAudiences(gw),
      currentDate: now,
      clockTolerance: ASSERTION_CLOCK_SKEW_SECONDS,
      requiredClaims: ['exp', 'jti'],
    });
    exp = payload.exp as number;
    iat = payload.iat;
    jti = payload.jti;
    aud = payload.aud;
  } catch (err) {
    const code = err instanceof joseErrors.JOSEError ? err.code : 'ERR_UNEXPECTED';
    return { ok: false, reason: `assertion rejected (${code})`, clientId };
  }
  // jose accepts an audience list that contains us; an assertion made out to several
  // audiences can be replayed here by any of them (the audience injection attack that
  // draft-ietf-oauth-rfc7523bis answers): this gateway must be its sole audience.
  if (Array.isArray(aud) && aud.length !== 1) return { ok: false, reason: 'assertion aud names more than this gateway', clientId };
  if (exp - nowSeconds > MAX_ASSERTION_LIFETIME_SECONDS + ASSERTION_CLOCK_SKEW_SECONDS) {
    return { ok: false, reason: `assertion expires more than ${MAX_ASSERTION_LIFETIME_SECONDS} s ahead`, clientId };
  }
  if (iat !== undefined) {
    if (iat > nowSeconds + ASSERTION_CLOCK_SKEW_SECONDS) return { ok: false, reason: 'assertion iat is in the future', clientId };
    if (exp - iat > MAX_ASSERTION_LIFETIME_SECONDS) return { ok: false, reason: `assertion lifetime exceeds ${MAX_ASSERTION_LIFETIME_SECONDS} s`, clientId };
  }
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) return { ok: false, reason: 'assertion jti unusable', clientId };

  // Rows past their expiry can go: an assertion that old fails the exp check above, so its
  // jti needs no remembering — by every process's clock, hence the grace: a process whose
  // clock runs ahead must not delete a jti that one with a slower clock still accepts the
  // assertion for. Pruning per client keeps the table at a few minutes of traffic.
  await gw.store.db
    .deleteFrom('client_assertion_jtis')
    .where('client_id', '=', clientId)
    .where('expires_at', '<', now.getTime() - ASSERTION_JTI_PRUNE_GRACE_SECONDS * 1000)
    .execute();
  const first = await insertOnce(gw.store.db, {
    table: 'client_assertion_jtis',
    values: { client_id: clientId, jti, expires_at: (exp + ASSERTION_CLOCK_SKEW_SECONDS) * 1000 },
    conflict: ['client_id', 'jti'],
  });
  if (!first) return { ok: false, reason: 'assertion jti already used', clientId };
  return authenticated(row);
}
