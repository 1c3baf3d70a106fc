import { timingSafeEqual } from 'node:crypto';
import { PaymentCodeError } from './errors.ts';
import { codeHmac, type IssueDeps, imageHandleAad, qrClaimsFor } from './issue-code.ts';
import { code128Png, qrPng } from './render.ts';
import { signQr } from './signed-qr.ts';
import { timed } from './step-up.ts';

/**
 * A code's pictures, rendered when asked for instead of at issuance (rendering three PNGs
 * cost more than everything else P does for a code). The issuance answer carries one URL per
 * picture; each is authorised like the code itself: the wallet key that asked for the code,
 * while the code is live (not redeemed, not expired).
 *
 * P keeps no copy of the digits (at rest a code is only its HMAC), so the URL carries an
 * opaque image handle: the digits sealed (AES-256-GCM under P's master key) to this code id.
 * The digits never appear in a URL or a log, a handle opens for its own code only, and it is
 * useless without the wallet's key, after redemption and after expiry.
 */
export const CODE_IMAGES = ['barcode', 'qr', 'signed-qr'] as const;
export type CodeImage = (typeof CODE_IMAGES)[number];

const HANDLE_PATTERN = /^v1\.[A-Za-z0-9_-]{1,32}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{22}$/;
const CODE_ID_PATTERN = /^pcd_[A-Za-z0-9_-]{22}$/;

export function isCodeImage(name: string): name is CodeImage {
  return (CODE_IMAGES as readonly string[]).includes(name);
}

/** The path of one picture of a code (the issuance answer makes it absolute). */
export function codeImagePath(codeId: string, imageHandle: string, image: CodeImage): string {
  return `/v1/payment-codes/${codeId}/images/${imageHandle}/${image}.png`;
}

export interface CodeImageRequest {
  owner: string;
  codeId: string;
  imageHandle: string;
  image: CodeImage;
}

/** The PNG, or `code_unknown` (also: another caller's code, a wrong handle), `code_already_redeemed`, `code_expired`. */
export async function codeImage(d: IssueDeps, input: CodeImageRequest): Promise<Buffer> {
  if (!CODE_ID_PATTERN.test(input.codeId) || !HANDLE_PATTERN.test(input.imageHandle)) throw new PaymentCodeError('code_unknown');
  const row = await d.db.selectFrom('pc_codes').selectAll().where('id', '=', input.codeId).executeTakeFirst();
  // Someone else's code answers like no code at all.
  if (row === undefined || row.owner !== input.owner) throw new PaymentCodeError('code_unknown');
  let digits: string;
  try {
    digits = d.sealer.unseal(input.imageHandle, imageHandleAad(row.id)).toString('ascii');
  } catch {
    throw new PaymentCodeError('code_unknown');
  }
  // The seal authenticates the handle already; the HMAC ties the digits to this row as well.
  const expected = Buffer.from(row.code_hmac, 'ascii');
  const actual = Buffer.from(codeHmac(d.codeIndexKey, digits), 'ascii');
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) throw new PaymentCodeError('code_unknown');
  if (row.status === 'redeemed') throw new PaymentCodeError('code_already_redeemed');
  if (row.expires_at <= d.clock.now().getTime()) throw new PaymentCodeError('code_expired');

  return timed(d.observe, 'render', async () => {
    if (input.image === 'barcode') return code128Png(digits);
    if (input.image === 'qr') return qrPng(digits, 6);
    // The same claims as at issuance; with the same signing key the same payload, byte for byte.
    const payload = await signQr(
      d.qrKeys,
      d.publicUrl,
      qrClaimsFor(d.subjectHandleKey, { subject: row.subject, issuedAtMs: row.issued_at, expiresAtMs: row.expires_at, qrNonce: row.qr_nonce, amountLimit: row.amount_limit, currency: row.currency, payee: row.payee }),
    );
    return qrPng(payload, 3);
  });
}
