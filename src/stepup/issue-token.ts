import { SignJWT } from 'jose';
import type { SigningKeyRing } from './signing-keys.ts';

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

/** Signs a step-up token with the active key. Signing keys sign nothing else. */
export async function issueStepUpToken(keys: SigningKeyRing, claims: StepUpClaims): Promise<string> {
  const key = await keys.activeKey();
  const { iat, exp, ...rest } = claims;
  return new SignJWT(rest)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: STEPUP_TOKEN_TYPE })
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key.privateKey);
}
