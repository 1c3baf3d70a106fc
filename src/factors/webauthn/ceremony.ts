import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON } from '@simplewebauthn/server';
import { z } from 'zod';
import { constantTimeEqual } from '../../crypto/constant-time.ts';
import { AssertionKeyCache, verifyWithAssertionKey } from './assertion-keys.ts';
import { SUPPORTED_ALGORITHM_IDS, type WebAuthnSettings } from './settings.ts';

/**
 * Our wrapper around @simplewebauthn/server. The library reports problems as plain `Error`s
 * with messages; we never look at those messages. Instead every property that can make a
 * response unacceptable is checked here first, each with its own typed reason. For a
 * registration the library then verifies the whole response again (attestation included); a
 * library error after our checks passed is `attestation_invalid`. For an assertion the
 * signature is checked here with the credential's cached node:crypto KeyObject
 * (assertion-keys.ts); the library's own assertion verification is kept for key shapes the
 * cache does not handle and as the reference the tests compare against.
 *
 * Pure: options in, outcome out. The caller owns the stored challenge and credential state
 * and persists what the outcome says (counter, backup state, a "possibly cloned" flag).
 */

/**
 * The library is loaded on first use: its certificate and ASN.1 stack costs about a second
 * of start-up, which every CLI command (none of which runs a ceremony) would otherwise pay.
 */
type ServerLibrary = typeof import('@simplewebauthn/server');
type HelpersLibrary = typeof import('@simplewebauthn/server/helpers');
let loading: Promise<{ server: ServerLibrary; helpers: HelpersLibrary }> | undefined;

export function loadWebAuthnLibrary(): Promise<{ server: ServerLibrary; helpers: HelpersLibrary }> {
  loading ??= Promise.all([import('@simplewebauthn/server'), import('@simplewebauthn/server/helpers')]).then(([server, helpers]) => ({ server, helpers }));
  return loading;
}

/** Bytes of randomness in every challenge (the spec asks for at least 16). */
export const CHALLENGE_BYTES = 32;

/** Spec limit for a credential id (WebAuthn §5.1.3: at most 1023 bytes). */
const MAX_CREDENTIAL_ID_BYTES = 1023;

export function newChallenge(): string {
  return randomBytes(CHALLENGE_BYTES).toString('base64url');
}

const b64url = z.string().min(1).max(16384).regex(/^[A-Za-z0-9_-]+$/, 'must be base64url');

const transport = z.enum(['ble', 'cable', 'hybrid', 'internal', 'nfc', 'smart-card', 'usb']);

/** RegistrationResponseJSON as the browser library sends it; unknown members are ignored. */
export const registrationResponseSchema = z.object({
  id: b64url,
  rawId: b64url,
  type: z.literal('public-key'),
  response: z.object({
    clientDataJSON: b64url,
    attestationObject: b64url,
    transports: z.array(z.string().max(32)).max(16).optional(),
    authenticatorData: b64url.optional(),
    publicKeyAlgorithm: z.number().int().optional(),
    publicKey: b64url.optional(),
  }),
  authenticatorAttachment: z.enum(['platform', 'cross-platform']).optional(),
  clientExtensionResults: z.record(z.string(), z.unknown()).optional().default({}),
});

/** AuthenticationResponseJSON as the browser library sends it. */
export const authenticationResponseSchema = z.object({
  id: b64url,
  rawId: b64url,
  type: z.literal('public-key'),
  response: z.object({
    clientDataJSON: b64url,
    authenticatorData: b64url,
    signature: b64url,
    userHandle: z.union([b64url, z.literal('')]).nullish(),
  }),
  authenticatorAttachment: z.enum(['platform', 'cross-platform']).nullish(),
  clientExtensionResults: z.record(z.string(), z.unknown()).optional().default({}),
});

/** Why a response was refused. Callers switch on these; none is ever shown to the user verbatim. */
export type CeremonyFailure =
  /** Not a WebAuthn response of the expected shape, or undecodable. */
  | 'malformed'
  /** clientDataJSON.type is not webauthn.create / webauthn.get. */
  | 'wrong_type'
  /** Not the challenge we issued (or none is live). */
  | 'challenge_mismatch'
  /** clientDataJSON.origin is not one of the configured origins (exact match). */
  | 'origin_mismatch'
  /** Made inside a cross-origin iframe: never accepted. */
  | 'cross_origin'
  /** authenticatorData.rpIdHash is not SHA-256 of our RP ID. */
  | 'rp_id_mismatch'
  /** UP flag not set. */
  | 'user_not_present'
  /** UV flag not set: no fingerprint / face / device PIN — not a second factor. */
  | 'user_not_verified'
  /** BS=1 with BE=0: an impossible combination. */
  | 'backup_state_invalid'
  /** BE differs from what the credential said at registration (BE never changes). */
  | 'backup_eligibility_changed'
  /** The signature does not verify with the stored public key. */
  | 'signature_invalid'
  /** The response names a credential other than the one it is checked against. */
  | 'credential_mismatch'
  /** The signature counter did not move forward (possible cloned authenticator). */
  | 'counter_regressed'
  /** Registration: the key algorithm is not EdDSA, ES256 or RS256. */
  | 'algorithm_not_allowed'
  /** Registration: the attestation statement did not verify. */
  | 'attestation_invalid'
  /** Registration under `direct`: no attestation certificate (none or self attestation). */
  | 'attestation_missing'
  /** Registration under `direct`: the AAGUID is not on the allow-list. */
  | 'aaguid_not_allowed'
  /** Registration under `direct`: the certificate chain does not end in a configured root. */
  | 'attestation_untrusted';

export interface Flags {
  up: boolean;
  uv: boolean;
  be: boolean;
  bs: boolean;
}

export interface NewCredential {
  credentialId: string;
  /** COSE public key, base64url. */
  publicKey: string;
  algorithm: number;
  counter: number;
  transports: string[];
  /** Lower-case AAGUID; all zeros when the authenticator or browser hid it. */
  aaguid: string;
  backupEligible: boolean;
  backedUp: boolean;
  attestationFormat: string;
  /** True only when the attestation chain was verified against our trust roots (`direct`). */
  attested: boolean;
}

export type RegistrationOutcome = { ok: true; credential: NewCredential } | { ok: false; reason: CeremonyFailure };

/** What we keep of a credential and need to check an assertion against it. */
export interface StoredCredential {
  credentialId: string;
  /** COSE public key, base64url. */
  publicKey: string;
  counter: number;
  backupEligible: boolean;
  backedUp: boolean;
  transports: string[];
}

export interface AssertionSuccess {
  ok: true;
  credentialId: string;
  newCounter: number;
  backupEligible: boolean;
  backedUp: boolean;
  /** The counter did not move forward but the policy is `flag-only`: accepted, must be flagged. */
  counterRegressed: boolean;
  /** base64url user handle the authenticator returned (discoverable credentials), if any. */
  userHandle: string | undefined;
}

export type AssertionOutcome =
  | AssertionSuccess
  | { ok: false; reason: CeremonyFailure; counter?: { stored: number; presented: number } };

// ---- options ---------------------------------------------------------------------------------

export interface RegistrationOptionsInput {
  /** Stable, non-personal handle of the user (bytes of our user id). */
  userHandle: Uint8Array;
  userName: string;
  userDisplayName: string;
  challenge: string;
  exclude: { credentialId: string; transports: string[] }[];
}

function asTransports(values: readonly string[]): z.infer<typeof transport>[] {
  return values.flatMap((v) => (transport.safeParse(v).success ? [v as z.infer<typeof transport>] : []));
}

export async function registrationOptions(settings: WebAuthnSettings, input: RegistrationOptionsInput): Promise<PublicKeyCredentialCreationOptionsJSON> {
  const { server, helpers } = await loadWebAuthnLibrary();
  const { isoBase64URL } = helpers;
  return server.generateRegistrationOptions({
    rpName: settings.rpName,
    rpID: settings.rpId,
    userName: input.userName,
    userID: new Uint8Array(input.userHandle),
    userDisplayName: input.userDisplayName,
    challenge: isoBase64URL.toBuffer(input.challenge),
    timeout: settings.timeoutSeconds * 1000,
    attestationType: settings.attestation.mode === 'direct' ? 'direct' : 'none',
    excludeCredentials: input.exclude.map((c) => ({ id: c.credentialId, transports: asTransports(c.transports) })),
    authenticatorSelection: { residentKey: 'preferred', userVerification: 'required' },
    supportedAlgorithmIDs: [...SUPPORTED_ALGORITHM_IDS],
  });
}

export interface AuthenticationOptionsInput {
  challenge: string;
  /** Empty: a discoverable-credential request (passkey login), the authenticator offers its own. */
  allow: { credentialId: string; transports: string[] }[];
}

export async function authenticationOptions(settings: WebAuthnSettings, input: AuthenticationOptionsInput): Promise<PublicKeyCredentialRequestOptionsJSON> {
  const { server, helpers } = await loadWebAuthnLibrary();
  const { isoBase64URL } = helpers;
  const options = await server.generateAuthenticationOptions({
    rpID: settings.rpId,
    challenge: isoBase64URL.toBuffer(input.challenge),
    timeout: settings.timeoutSeconds * 1000,
    userVerification: 'required',
    allowCredentials: input.allow.map((c) => ({ id: c.credentialId, transports: asTransports(c.transports) })),
  });
  if (input.allow.length === 0) delete options.allowCredentials;
  return options;
}

// ---- shared checks ---------------------------------------------------------------------------

interface ClientData {
  type: string;
  challenge: string;
  origin: string;
  crossOrigin: boolean;
  topOrigin: string | undefined;
  /** As sent (legacy; the library refuses a malformed one, so do we). */
  tokenBinding: unknown;
}

const clientDataSchema = z.object({
  type: z.string(),
  challenge: z.string(),
  origin: z.string(),
  crossOrigin: z.boolean().optional(),
  topOrigin: z.string().optional(),
  tokenBinding: z.unknown().optional(),
});

function decodeClientDataBytes(bytes: Buffer): ClientData | undefined {
  try {
    const parsed = clientDataSchema.safeParse(JSON.parse(bytes.toString('utf8')));
    if (!parsed.success) return undefined;
    return { ...parsed.data, crossOrigin: parsed.data.crossOrigin === true, topOrigin: parsed.data.topOrigin, tokenBinding: parsed.data.tokenBinding };
  } catch {
    return undefined;
  }
}

function decodeClientData(b64: string): ClientData | undefined {
  return decodeClientDataBytes(Buffer.from(b64, 'base64url'));
}

/** @simplewebauthn/server's rule for the (obsolete) tokenBinding member: absent, or an object with a known status. */
function tokenBindingAcceptable(tb: unknown): boolean {
  if (!tb) return true;
  return typeof tb === 'object' && ['present', 'supported', 'notSupported'].includes((tb as { status?: unknown }).status as string);
}

function checkClientData(cd: ClientData, type: 'webauthn.create' | 'webauthn.get', expectedChallenge: string, settings: WebAuthnSettings): CeremonyFailure | undefined {
  if (cd.type !== type) return 'wrong_type';
  if (expectedChallenge === '' || !constantTimeEqual(cd.challenge, expectedChallenge)) return 'challenge_mismatch';
  if (!settings.origins.includes(cd.origin)) return 'origin_mismatch';
  if (cd.crossOrigin || cd.topOrigin !== undefined) return 'cross_origin';
  return undefined;
}

const rpIdHashes = new Map<string, Buffer>();

/** SHA-256 of the RP ID, computed once per RP ID (a process has one or a few). */
function rpIdHash(rpId: string): Buffer {
  let h = rpIdHashes.get(rpId);
  if (h === undefined) {
    h = createHash('sha256').update(rpId, 'utf8').digest();
    if (rpIdHashes.size >= 64) rpIdHashes.clear();
    rpIdHashes.set(rpId, h);
  }
  return h;
}

function checkFlags(hash: Uint8Array, flags: Flags, settings: WebAuthnSettings): CeremonyFailure | undefined {
  const expected = rpIdHash(settings.rpId);
  if (hash.byteLength !== expected.byteLength || !timingSafeEqual(hash, expected)) return 'rp_id_mismatch';
  if (!flags.up) return 'user_not_present';
  if (!flags.uv) return 'user_not_verified';
  if (flags.bs && !flags.be) return 'backup_state_invalid';
  return undefined;
}

// ---- registration ----------------------------------------------------------------------------

export interface VerifyRegistrationInput {
  response: unknown;
  expectedChallenge: string;
}

export async function verifyRegistration(settings: WebAuthnSettings, input: VerifyRegistrationInput): Promise<RegistrationOutcome> {
  const { server, helpers } = await loadWebAuthnLibrary();
  const { convertAAGUIDToString, convertCertBufferToPEM, decodeAttestationObject, decodeCredentialPublicKey, isoBase64URL, parseAuthenticatorData, validateCertificatePath } = helpers;
  const parsed = registrationResponseSchema.safeParse(input.response);
  if (!parsed.success) return { ok: false, reason: 'malformed' };
  const response = parsed.data;
  if (response.id !== response.rawId) return { ok: false, reason: 'malformed' };
  const cd = decodeClientData(response.response.clientDataJSON);
  if (cd === undefined) return { ok: false, reason: 'malformed' };
  const cdFailure = checkClientData(cd, 'webauthn.create', input.expectedChallenge, settings);
  if (cdFailure !== undefined) return { ok: false, reason: cdFailure };

  let fmt: string;
  let x5c: Uint8Array[] | undefined;
  let auth: ReturnType<HelpersLibrary['parseAuthenticatorData']>;
  let algorithm: unknown;
  try {
    const attestation = decodeAttestationObject(isoBase64URL.toBuffer(response.response.attestationObject));
    fmt = attestation.get('fmt');
    x5c = attestation.get('attStmt').get('x5c');
    auth = parseAuthenticatorData(attestation.get('authData'));
    if (auth.credentialID === undefined || auth.credentialPublicKey === undefined || auth.aaguid === undefined) return { ok: false, reason: 'malformed' };
    algorithm = decodeCredentialPublicKey(auth.credentialPublicKey).get(3);
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  const flagFailure = checkFlags(auth.rpIdHash, auth.flags, settings);
  if (flagFailure !== undefined) return { ok: false, reason: flagFailure };
  if (auth.credentialID.byteLength === 0 || auth.credentialID.byteLength > MAX_CREDENTIAL_ID_BYTES) return { ok: false, reason: 'malformed' };
  if (isoBase64URL.fromBuffer(auth.credentialID) !== response.id) return { ok: false, reason: 'credential_mismatch' };
  if (typeof algorithm !== 'number' || !SUPPORTED_ALGORITHM_IDS.includes(algorithm)) return { ok: false, reason: 'algorithm_not_allowed' };
  const aaguid = convertAAGUIDToString(auth.aaguid).toLowerCase();

  let attested = false;
  if (settings.attestation.mode === 'direct') {
    // Self attestation (packed without x5c) and `none` prove nothing about the authenticator model.
    if (fmt === 'none' || x5c === undefined || x5c.length === 0) return { ok: false, reason: 'attestation_missing' };
    if (!settings.attestation.aaguids.has(aaguid)) return { ok: false, reason: 'aaguid_not_allowed' };
    try {
      // Our own trust anchors, passed explicitly: the library's process-wide root store is not
      // consulted for this decision (and with no roots it would skip the chain check).
      await validateCertificatePath(x5c.map((c) => convertCertBufferToPEM(new Uint8Array(c))), [...settings.attestation.trustRoots]);
    } catch {
      return { ok: false, reason: 'attestation_untrusted' };
    }
    attested = true;
  }

  let verified: Awaited<ReturnType<ServerLibrary['verifyRegistrationResponse']>>;
  try {
    verified = await server.verifyRegistrationResponse({
      response: { ...response, clientExtensionResults: response.clientExtensionResults ?? {} } as Parameters<ServerLibrary['verifyRegistrationResponse']>[0]['response'],
      expectedChallenge: (c) => constantTimeEqual(c, input.expectedChallenge),
      expectedOrigin: [...settings.origins],
      expectedRPID: settings.rpId,
      expectedType: 'webauthn.create',
      requireUserPresence: true,
      requireUserVerification: true,
      supportedAlgorithmIDs: [...SUPPORTED_ALGORITHM_IDS],
    });
  } catch {
    // Everything we can name was checked above; what is left is the attestation statement itself.
    return { ok: false, reason: 'attestation_invalid' };
  }
  if (!verified.verified) return { ok: false, reason: 'attestation_invalid' };
  const info = verified.registrationInfo;
  return {
    ok: true,
    credential: {
      credentialId: info.credential.id,
      publicKey: isoBase64URL.fromBuffer(info.credential.publicKey),
      algorithm,
      counter: info.credential.counter,
      transports: asTransports(response.response.transports ?? []),
      aaguid,
      backupEligible: auth.flags.be,
      backedUp: auth.flags.bs,
      attestationFormat: fmt,
      attested,
    },
  };
}

// ---- authentication --------------------------------------------------------------------------

/** One minimal DER INTEGER (positive, no superfluous leading zero) at `at`; returns the offset after it. */
function derPositiveInteger(b: Uint8Array, at: number): number | undefined {
  if (b[at] !== 0x02) return undefined;
  const len = b[at + 1];
  if (len === undefined || len === 0 || len > 0x7f || at + 2 + len > b.length) return undefined;
  const first = b[at + 2] as number;
  if (first & 0x80) return undefined;
  if (first === 0 && (len === 1 || ((b[at + 3] as number) & 0x80) === 0)) return undefined;
  return at + 2 + len;
}

/** `SEQUENCE { INTEGER r, INTEGER s }` in its only DER encoding (P-256 and P-384 fit the short length form). */
export function isCanonicalDerEcdsaSignature(b: Uint8Array): boolean {
  if (b.length < 8 || b[0] !== 0x30 || b[1] !== b.length - 2 || (b[1] as number) > 0x7f) return false;
  const afterR = derPositiveInteger(b, 2);
  if (afterR === undefined) return false;
  return derPositiveInteger(b, afterR) === b.length;
}

export interface VerifyAssertionInput {
  response: unknown;
  expectedChallenge: string;
  credential: StoredCredential;
}

/** The credential id a response names, for looking the credential up; undefined if malformed. */
export function assertionCredentialId(response: unknown): string | undefined {
  const parsed = authenticationResponseSchema.safeParse(response);
  return parsed.success && parsed.data.id === parsed.data.rawId ? parsed.data.id : undefined;
}

type AuthenticationResponse = z.infer<typeof authenticationResponseSchema>;
type ParsedAuthData = ReturnType<HelpersLibrary['parseAuthenticatorData']>;

/** What every assertion check before the signature produced: the response and its decoded parts. */
interface CheckedAssertion {
  ok: true;
  response: AuthenticationResponse;
  clientDataBytes: Buffer;
  authDataBytes: Buffer;
  auth: ParsedAuthData;
}

/** Every check that does not need the public key, each with its typed reason. */
function checkAssertion(settings: WebAuthnSettings, input: VerifyAssertionInput, helpers: HelpersLibrary): CheckedAssertion | { ok: false; reason: CeremonyFailure } {
  const parsed = authenticationResponseSchema.safeParse(input.response);
  if (!parsed.success) return { ok: false, reason: 'malformed' };
  const response = parsed.data;
  if (response.id !== response.rawId) return { ok: false, reason: 'malformed' };
  if (!constantTimeEqual(response.id, input.credential.credentialId)) return { ok: false, reason: 'credential_mismatch' };
  // One decoding of each member, used both for the checks and as the signed bytes.
  const clientDataBytes = Buffer.from(response.response.clientDataJSON, 'base64url');
  const cd = decodeClientDataBytes(clientDataBytes);
  if (cd === undefined) return { ok: false, reason: 'malformed' };
  const cdFailure = checkClientData(cd, 'webauthn.get', input.expectedChallenge, settings);
  if (cdFailure !== undefined) return { ok: false, reason: cdFailure };
  if (!tokenBindingAcceptable(cd.tokenBinding)) return { ok: false, reason: 'malformed' };

  const authDataBytes = Buffer.from(response.response.authenticatorData, 'base64url');
  let auth: ParsedAuthData;
  try {
    auth = helpers.parseAuthenticatorData(authDataBytes);
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  if (auth.flags.at) return { ok: false, reason: 'malformed' };
  const flagFailure = checkFlags(auth.rpIdHash, auth.flags, settings);
  if (flagFailure !== undefined) return { ok: false, reason: flagFailure };
  if (auth.flags.be !== input.credential.backupEligible) return { ok: false, reason: 'backup_eligibility_changed' };
  return { ok: true, response, clientDataBytes, authDataBytes, auth };
}

/** After a verified signature: the counter rule, then the outcome. */
function concludeAssertion(settings: WebAuthnSettings, input: VerifyAssertionInput, checked: CheckedAssertion, presented: number): AssertionOutcome {
  const stored = input.credential.counter;
  // WebAuthn §7.2 step 21: a counter that is in use must grow; zero on both sides means "no counter".
  const regressed = (presented > 0 || stored > 0) && presented <= stored;
  if (regressed && settings.counterRegression === 'refuse') return { ok: false, reason: 'counter_regressed', counter: { stored, presented } };
  const { response, auth } = checked;
  const userHandle = response.response.userHandle;
  return {
    ok: true,
    credentialId: response.id,
    newCounter: presented,
    backupEligible: auth.flags.be,
    backedUp: auth.flags.bs,
    counterRegressed: regressed,
    userHandle: userHandle === undefined || userHandle === null || userHandle === '' ? undefined : userHandle,
  };
}

/** Stored COSE keys as node:crypto KeyObjects, for the process (bounded LRU, see assertion-keys.ts). */
export const assertionKeys = new AssertionKeyCache();

/**
 * Verifies an assertion against one stored credential. Our checks first (checkAssertion),
 * then the signature over authenticatorData || SHA-256(clientDataJSON) with the credential's
 * cached KeyObject and node:crypto, then the counter. A stored key of a shape the cache does
 * not handle goes through the library instead (verifyAssertionWithLibrary), unchanged.
 */
export async function verifyAssertion(settings: WebAuthnSettings, input: VerifyAssertionInput): Promise<AssertionOutcome> {
  const { helpers } = await loadWebAuthnLibrary();
  const checked = checkAssertion(settings, input, helpers);
  if (!checked.ok) return checked;
  const key = assertionKeys.get(input.credential.publicKey, helpers.decodeCredentialPublicKey);
  if (key === 'unsupported') return librarySignatureStep(settings, input, checked);
  const signature = Buffer.from(checked.response.response.signature, 'base64url');
  // An EC2 signature must be the one canonical DER encoding (WebAuthn §6.5.6): see below.
  if (key.kind === 'es256' && !isCanonicalDerEcdsaSignature(signature)) return { ok: false, reason: 'signature_invalid' };
  const clientDataHash = createHash('sha256').update(checked.clientDataBytes).digest();
  if (!verifyWithAssertionKey(key, Buffer.concat([checked.authDataBytes, clientDataHash]), signature)) return { ok: false, reason: 'signature_invalid' };
  return concludeAssertion(settings, input, checked, checked.auth.counter);
}

/**
 * The same verification with @simplewebauthn/server doing the signature (and, again, every
 * check it knows). What ran before the KeyObject cache; kept as the path for key shapes the
 * cache does not handle and as the reference the tests hold verifyAssertion to.
 */
export async function verifyAssertionWithLibrary(settings: WebAuthnSettings, input: VerifyAssertionInput): Promise<AssertionOutcome> {
  const { helpers } = await loadWebAuthnLibrary();
  const checked = checkAssertion(settings, input, helpers);
  if (!checked.ok) return checked;
  return librarySignatureStep(settings, input, checked);
}

async function librarySignatureStep(settings: WebAuthnSettings, input: VerifyAssertionInput, checked: CheckedAssertion): Promise<AssertionOutcome> {
  const { server, helpers } = await loadWebAuthnLibrary();
  const { isoBase64URL } = helpers;
  const { response } = checked;
  // The library's ASN.1 reader is lenient (found by fuzzing: a SEQUENCE tag with its class
  // bits changed still verifies), so one signature would have many accepted encodings. An
  // EC2 key's signature must be the one canonical DER encoding (WebAuthn §6.5.6).
  try {
    const kty = helpers.decodeCredentialPublicKey(isoBase64URL.toBuffer(input.credential.publicKey)).get(1);
    if (kty === 2 && !isCanonicalDerEcdsaSignature(isoBase64URL.toBuffer(response.response.signature))) return { ok: false, reason: 'signature_invalid' };
  } catch {
    return { ok: false, reason: 'signature_invalid' };
  }

  let verified: Awaited<ReturnType<ServerLibrary['verifyAuthenticationResponse']>>;
  try {
    verified = await server.verifyAuthenticationResponse({
      response: { ...response, clientExtensionResults: response.clientExtensionResults ?? {} } as Parameters<ServerLibrary['verifyAuthenticationResponse']>[0]['response'],
      expectedChallenge: (c) => constantTimeEqual(c, input.expectedChallenge),
      expectedOrigin: [...settings.origins],
      expectedRPID: settings.rpId,
      expectedType: 'webauthn.get',
      // The counter is judged afterwards, after the signature, so that the policy (refuse or
      // flag-only) decides and an unsigned response can never flag a credential.
      credential: { id: input.credential.credentialId, publicKey: isoBase64URL.toBuffer(input.credential.publicKey), counter: 0 },
      requireUserVerification: true,
    });
  } catch {
    // Signature bytes that do not even parse, a key we cannot use: no valid signature.
    return { ok: false, reason: 'signature_invalid' };
  }
  if (!verified.verified) return { ok: false, reason: 'signature_invalid' };
  return concludeAssertion(settings, input, checked, verified.authenticationInfo.newCounter);
}
