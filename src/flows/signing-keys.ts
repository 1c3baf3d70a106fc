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
