import { randomBytes } from 'node:crypto';
import { base32Encode } from '../../otp/index.ts';
import { secretLengthFor, type TotpParams } from './totp-params.ts';

/** A fresh seed from the CSPRNG: at least 20 bytes, and the hash's output size for SHA256/SHA512. */
export function newTotpSecret(params: Pick<TotpParams, 'algorithm'>, configuredBytes: number): Buffer {
  return randomBytes(secretLengthFor(params.algorithm, configuredBytes));
}

export interface OtpauthUriInput {
  issuer: string;
  /** The account as the app shows it under the issuer (the username). */
  accountName: string;
  secret: Uint8Array;
  params: TotpParams;
}

/**
 * The Key URI Format authenticator apps scan:
 * `otpauth://totp/Issuer:account?secret=BASE32&issuer=Issuer&algorithm=…&digits=…&period=…`.
 * Issuer and account are percent-encoded (a space is %20, never "+"); the secret is
 * unpadded base32. Algorithm, digits and period are always written, so an app never guesses.
 */
export function otpauthUri(input: OtpauthUriInput): string {
  if (input.issuer.includes(':')) throw new TypeError('the TOTP issuer must not contain ":"');
  const label = `${encodeURIComponent(input.issuer)}:${encodeURIComponent(input.accountName)}`;
  const query = [
    `secret=${base32Encode(input.secret)}`,
    `issuer=${encodeURIComponent(input.issuer)}`,
    `algorithm=${input.params.algorithm}`,
    `digits=${input.params.digits}`,
    `period=${input.params.period}`,
  ].join('&');
  return `otpauth://totp/${label}?${query}`;
}

export interface QrImages {
  png: Buffer;
  svg: string;
}

/**
 * The QR code of an otpauth URI as PNG and SVG: black on an opaque white background with the
 * standard four-module quiet zone, so phone cameras read it on dark themes too.
 */
export async function qrImages(text: string): Promise<QrImages> {
  // Loaded on first use: only enrolments need it, and start-up stays lean.
  const { default: QRCode } = await import('qrcode');
  const common = { errorCorrectionLevel: 'M' as const, margin: 4, color: { dark: '#000000ff', light: '#ffffffff' } };
  const [png, svg] = await Promise.all([QRCode.toBuffer(text, { ...common, type: 'png', scale: 6 }), QRCode.toString(text, { ...common, type: 'svg' })]);
  return { png, svg };
}
