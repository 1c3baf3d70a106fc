import { z } from 'zod';
import type { Amr } from '../factor.ts';
import type { NewCredential, StoredCredential } from './ceremony.ts';

/**
 * How a WebAuthn credential is kept: one `factors` row per credential (type `webauthn`), the
 * signature counter in its `counter` column, everything else in `params`. All of it is
 * public data (a public key, flags, an AAGUID), so nothing is sealed; what matters is that
 * counter and backup state only change through guarded updates after a verified assertion.
 */

const b64url = z.string().regex(/^[A-Za-z0-9_-]+$/);

export const credentialParamsSchema = z.object({
  credentialId: b64url,
  publicKey: b64url,
  /** COSE algorithm id of the public key (-8 EdDSA, -7 ES256, -257 RS256). */
  publicKeyAlgorithm: z.number().int(),
  transports: z.array(z.string()),
  aaguid: z.string(),
  /** BE at registration; it never changes for a credential. */
  backupEligible: z.boolean(),
  /** BS as last reported. */
  backedUp: z.boolean(),
  attestationFormat: z.string(),
  attested: z.boolean(),
  /** Set when a signature counter did not grow (possible clone). */
  flaggedAt: z.number().int().optional(),
  flagReason: z.string().optional(),
});

export type CredentialParams = z.infer<typeof credentialParamsSchema>;

/** Registration-time data of a pending enrolment (kept in the pending row until confirmed). */
export const pendingParamsSchema = z.object({
  challenge: b64url,
});

export function paramsFromNewCredential(c: NewCredential): CredentialParams {
  return {
    credentialId: c.credentialId,
    publicKey: c.publicKey,
    publicKeyAlgorithm: c.algorithm,
    transports: c.transports,
    aaguid: c.aaguid,
    backupEligible: c.backupEligible,
    backedUp: c.backedUp,
    attestationFormat: c.attestationFormat,
    attested: c.attested,
  };
}

export function parseCredentialParams(params: Record<string, unknown>): CredentialParams | undefined {
  const parsed = credentialParamsSchema.safeParse(params);
  return parsed.success ? parsed.data : undefined;
}

export function storedCredential(params: CredentialParams, counter: number): StoredCredential {
  return {
    credentialId: params.credentialId,
    publicKey: params.publicKey,
    counter,
    backupEligible: params.backupEligible,
    backedUp: params.backedUp,
    transports: params.transports,
  };
}

/** Device-bound: not backup-eligible, so the private key cannot leave the authenticator by syncing. */
export function isDeviceBound(params: Pick<CredentialParams, 'backupEligible'>): boolean {
  return !params.backupEligible;
}

/**
 * What a verified assertion (always with UV) proves. RFC 8176: `hwk` for a key bound to
 * the device, `swk` for one that syncs through a cloud keychain; `user` for the user
 * verification. Whether UV was a fingerprint, a face or a PIN the authenticator does not
 * say, so `fpt`/`pin` are never claimed.
 */
export function assuranceOf(params: Pick<CredentialParams, 'backupEligible'>): { amr: Amr[]; acr: 'urn:stepgate:aal3' | 'urn:stepgate:aal2' } {
  return isDeviceBound(params) ? { amr: ['hwk', 'user'], acr: 'urn:stepgate:aal3' } : { amr: ['swk', 'user'], acr: 'urn:stepgate:aal2' };
}

/** The WebAuthn user handle: the bytes of our user id (random, non-personal). */
export function userHandleOf(userId: string): Buffer {
  return Buffer.from(userId, 'utf8');
}
