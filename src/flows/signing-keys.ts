import type { Gateway } from '../gateway.ts';
import type { SigningAlg } from '../stepup/signing-keys.ts';
import type { AuditActor } from './users.ts';

/**
 * Rotating the step-up signing key from the console: the key ring makes the new key (published
 * at once, signing after one refresh interval) and retires the old one in its own
 * transaction; the audit record names who, why and both key ids, as `stepgate keys rotate` does.
 */
export async function rotateSigningKey(gw: Gateway, alg: SigningAlg, who: AuditActor & { reason: string }): Promise<{ kid: string; retiredKid: string | undefined }> {
  const result = await gw.keys.rotate(alg);
  await gw.audit.append(gw.store.db, {
    type: 'signing_key.rotated',
    actor: who.actor,
    ip: who.ip ?? null,
    requestId: who.requestId ?? null,
    data: { kid: result.kid, retiredKid: result.retiredKid ?? null, alg, reason: who.reason },
  });
  return { kid: result.kid, retiredKid: result.retiredKid };
}
