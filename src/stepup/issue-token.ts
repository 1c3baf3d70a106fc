import { SignJWT } from 'jose';
import type { ActiveKey } from './signing-keys.ts';

/** The claims of a step-up token (DESIGN.md §1 "Token format"). */
export interface StepUpClaims {
  iss: string;
  sub: string;
  aud: string;
  iat: number;
  exp: number;
  jti: string;
  txn: string;
  auth_time: number;
  acr: string;
  amr: string[];
  authorization_details: Record<string, unknown>[];
}

export const STEPUP_TOKEN_TYPE = 'stepup+jwt';

/**
 * Signs a step-up token with the given (active) key. Signing keys sign nothing else.
 * The caller fetches the key first: a key-ring refresh reads the database, which must not
 * happen inside an open SQLite transaction (one connection: it would wait for itself).
 */
export async function issueStepUpToken(key: ActiveKey, claims: StepUpClaims): Promise<string> {
  const { iat, exp, ...rest } = claims;
  return new SignJWT(rest)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: STEPUP_TOKEN_TYPE })
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key.privateKey);
}
