import { createHash, randomBytes } from 'node:crypto';

/** A random identifier with a readable prefix, e.g. `usr_3q7…`. 128 bits of randomness. */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(16).toString('base64url')}`;
}

/** A bearer secret (session id, ticket, set-up token): 256 bits, base64url. */
export function newSecretToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Stored form of a high-entropy bearer secret: SHA-256 (no salt needed at 256 bits). */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('base64url');
}
