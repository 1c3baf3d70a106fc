import type { Gateway } from '../gateway.ts';
import type { SigningAlg } from '../stepup/signing-keys.ts';
import type { AuditActor } from './users.ts';

/**
 * Rotating the step-up signing key from the console: the key ring makes the new key (published
 * at once, signing after one refresh interval) and retires the old one in one transaction,
 * with the audit record naming who, why and both key ids (as `stepgate keys rotate` does): no
 * rotation without its record.
 */
export async function rotateSigningKey(gw: Gateway, alg: SigningAlg, who: AuditActor & { reason: string }): Promise<{ kid: string; retiredKid: string | undefined }> {
  const result = await gw.keys.rotate(alg, async (tx, rotated) => {
    await gw.audit.append(tx, {
      type: 'signing_key.rotated',
      actor: who.actor,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { kid: rotated.kid, retiredKid: rotated.retiredKid ?? null, alg, reason: who.reason },
    });
  });
  return { kid: result.kid, retiredKid: result.retiredKid };
}

/**
 * Revoking a step-up signing key (compromised, or suspected to be), with its audit record in
 * the same transaction: it leaves the JWKS at once and never signs again; when it was the
 * active key a new one replaces it and signs at once. Undefined when no published key has
 * this kid (unknown, already revoked, or retired past its publication window).
 */
export async function revokeSigningKey(
  gw: Gateway,
  kid: string,
  who: AuditActor & { reason: string },
): Promise<{ kid: string; wasActive: boolean; newKid: string | undefined } | undefined> {
  return gw.keys.revoke(kid, async (tx, revoked) => {
    await gw.audit.append(tx, {
      type: 'signing_key.revoked',
      actor: who.actor,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { kid: revoked.kid, wasActive: revoked.wasActive, newKid: revoked.newKid ?? null, reason: who.reason },
    });
  });
}
