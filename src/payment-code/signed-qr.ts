import { createHmac, type KeyObject } from 'node:crypto';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { VerifierClock } from '../verifier/index.ts';
import { PaymentCodeError } from './errors.ts';
import type { QrKeyRing } from './signing-keys.ts';

/**
 * Signed QR codes (way 3): a compact JWS a smart terminal can check offline with this
 * service's JWKS, then redeem online (redemption still consumes it once).
 *
 *   header  {"alg":"EdDSA","kid":"pcq-…","typ":"pcqr+jwt"}
 *   claims  {"iss": <public URL>, "sub": <subject handle>, "iat", "exp", "jti": <nonce>,
 *            "lim": "120.00", "cur": "CNY", "payee"?: "shop-42"}
 *
 * `sub` is a pseudonymous handle (HMAC of the gateway user id), so a terminal can tell
 * "the same payer again" without learning who it is.
 */
export const QR_TYP = 'pcqr+jwt';
const MAX_QR_LENGTH = 2048;

export interface QrClaims {
  sub: string;
  iat: number;
  exp: number;
  jti: string;
  lim: string;
  cur: string;
  payee?: string;
}

export function subjectHandle(key: KeyObject, subject: string): string {
  return `sh_${createHmac('sha256', key).update(subject, 'utf8').digest('base64url').slice(0, 22)}`;
}

export async function signQr(ring: QrKeyRing, issuer: string, claims: QrClaims): Promise<string> {
  const key = await ring.signingKey();
  const { iat, exp, ...rest } = claims;
  return new SignJWT({ ...rest })
    .setProtectedHeader({ alg: 'EdDSA', kid: key.kid, typ: QR_TYP })
    .setIssuer(issuer)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key.privateKey);
}

/** A compact JWS, as far as its shape goes (redemption tells it apart from 18 digits). */
export function looksLikeQrPayload(text: string): boolean {
  return text.length <= MAX_QR_LENGTH && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(text);
}

/**
 * Verifies a signed QR payload. Every failure — bad shape, unknown kid, wrong algorithm,
 * tampered claims, bad signature — is `qr_invalid`; a good signature past `exp` is
 * `code_expired`.
 */
export async function verifyQr(ring: QrKeyRing, issuer: string, payload: string, clock: VerifierClock): Promise<QrClaims> {
  if (!looksLikeQrPayload(payload)) throw new PaymentCodeError('qr_invalid');
  let kid: unknown;
  try {
    kid = decodeProtectedHeader(payload).kid;
  } catch {
    throw new PaymentCodeError('qr_invalid');
  }
  const key = typeof kid === 'string' && kid.length <= 64 ? await ring.publicKey(kid) : undefined;
  if (key === undefined) throw new PaymentCodeError('qr_invalid');
  try {
    const { payload: claims } = await jwtVerify(payload, key, {
      algorithms: ['EdDSA'],
      typ: QR_TYP,
      issuer,
      currentDate: clock.now(),
      clockTolerance: 0,
      requiredClaims: ['sub', 'iat', 'exp', 'jti'],
    });
    if (typeof claims.lim !== 'string' || typeof claims.cur !== 'string' || typeof claims.jti !== 'string') throw new PaymentCodeError('qr_invalid');
    return claims as unknown as QrClaims;
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new PaymentCodeError('code_expired');
    if (err instanceof PaymentCodeError) throw err;
    throw new PaymentCodeError('qr_invalid');
  }
}
