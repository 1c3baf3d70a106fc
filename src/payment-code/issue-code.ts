import { createHmac, type KeyObject, randomBytes } from 'node:crypto';
import type { VerifierClock } from '../verifier/index.ts';
import { groupCode, newOnlineCode } from './code-format.ts';
import { PaymentCodeError } from './errors.ts';
import type { EventLog } from './events.ts';
import { code128Png, qrPng } from './render.ts';
import type { PaymentCodeSealer } from './sealer.ts';
import { type QrClaims, signQr, subjectHandle } from './signed-qr.ts';
import type { QrKeyRing } from './signing-keys.ts';
import { type PhaseObserver, type StepUpContext, type StepUpGate, timed } from './step-up.ts';
import type { PcDb, PcTx } from './store/database.ts';

/**
 * Online payment codes (way 1), with their signed QR (way 3). The code is drawn from the
 * CSPRNG, unique among live codes (the `pc_live_codes` primary key decides, also across
 * processes), stored only as an HMAC, and valid `ttlSeconds`.
 */
export const ISSUE_ACTION = 'payment_code.issue';

export interface IssueDeps {
  db: PcDb;
  events: EventLog;
  clock: VerifierClock;
  gate: StepUpGate;
  qrKeys: QrKeyRing;
  codeIndexKey: KeyObject;
  subjectHandleKey: KeyObject;
  /** Seals each code's image handle (the digits, for the image URLs; never stored). */
  sealer: PaymentCodeSealer;
  prefix: string;
  ttlSeconds: number;
  publicUrl: string;
  observe: PhaseObserver;
}

/** What the wallet asks for. */
export interface CodeRequest {
  amountLimit: string;
  currency: string;
  deviceId: string;
  payee?: string | undefined;
}

/**
 * The context the user approves at the gateway, and the one the token must carry back
 * verbatim. `amount` (not `amountLimit`) so the gateway's amount policies and the step-up
 * page see it; the representation is exactly what the wallet sent.
 */
export function issueStepUpContext(request: CodeRequest): StepUpContext {
  return {
    amount: request.amountLimit,
    currency: request.currency,
    deviceId: request.deviceId,
    ...(request.payee === undefined ? {} : { payee: request.payee }),
  };
}

export function issueBindingMessage(request: CodeRequest): string {
  return request.payee === undefined
    ? `Payment code for up to ${request.amountLimit} ${request.currency} on device ${request.deviceId}`
    : `Payment code for up to ${request.amountLimit} ${request.currency} at ${request.payee}`;
}

export interface IssuedCode {
  codeId: string;
  code: string;
  codeGrouped: string;
  subject: string;
  amountLimit: string;
  currency: string;
  deviceId: string;
  payee: string | null;
  issuedAt: Date;
  expiresAt: Date;
  acr: string;
  signedQr: string;
  /** Opaque, for the image URLs (code-images.ts): the digits sealed to this code id; P keeps no copy. */
  imageHandle: string;
}

export interface RenderedCode extends IssuedCode {
  barcodePng: Buffer;
  qrPng: Buffer;
  signedQrPng: Buffer;
}

/** The associated data of a code's image handle: a handle unseals for its own code only. */
export function imageHandleAad(codeId: string): string {
  return `pc_codes.image_handle:${codeId}`;
}

/** What a code's signed QR says; built from the stored row too, so a picture can be made again (Ed25519 is deterministic). */
export function qrClaimsFor(subjectHandleKey: KeyObject, code: { subject: string; issuedAtMs: number; expiresAtMs: number; qrNonce: string; amountLimit: string; currency: string; payee: string | null }): QrClaims {
  return {
    sub: subjectHandle(subjectHandleKey, code.subject),
    iat: Math.floor(code.issuedAtMs / 1000),
    exp: Math.floor(code.expiresAtMs / 1000),
    jti: code.qrNonce,
    lim: code.amountLimit,
    cur: code.currency,
    ...(code.payee === null ? {} : { payee: code.payee }),
  };
}

export function codeHmac(key: KeyObject, digits: string): string {
  return createHmac('sha256', key).update(digits, 'ascii').digest('base64url');
}

/**
 * Claims the code value for a new live code: inserts it, or takes over the slot of a code
 * that has expired. One statement, so two issuers of the same value cannot both win.
 */
async function claimLiveCode(tx: PcTx, hmac: string, codeId: string, nowMs: number, expiresAt: number): Promise<boolean> {
  const result = await tx
    .insertInto('pc_live_codes')
    .values({ code_hmac: hmac, code_id: codeId, expires_at: expiresAt })
    .onConflict((oc) => oc.column('code_hmac').doUpdateSet({ code_id: codeId, expires_at: expiresAt }).where('pc_live_codes.expires_at', '<=', nowMs))
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

export interface IssueInput {
  owner: string;
  subject: string;
  stepupId: string;
  request: CodeRequest;
  requestId?: string;
}

/** Verifies the step-up for this exact request, then mints the code (the token is used once). */
export async function issueCode(d: IssueDeps, input: IssueInput): Promise<IssuedCode> {
  const context = issueStepUpContext(input.request);
  const verified = await d.gate.complete({ owner: input.owner, action: ISSUE_ACTION, subject: input.subject, stepupId: input.stepupId, context });
  const { claims } = verified;
  const now = d.clock.now();
  const nowMs = now.getTime();
  const expiresAtMs = nowMs + d.ttlSeconds * 1000;
  const codeId = `pcd_${randomBytes(16).toString('base64url')}`;
  const qrNonce = randomBytes(16).toString('base64url');

  const code = await timed(d.observe, 'code_write', () => d.db.transaction().execute(async (tx) => {
    if (!(await verified.finish(tx))) return undefined;
    let digits: string | undefined;
    // A collision with a live code is ~#live/10^15 per draw; a few draws always suffice.
    for (let attempt = 0; attempt < 8 && digits === undefined; attempt++) {
      const candidate = newOnlineCode(d.prefix);
      if (await claimLiveCode(tx, codeHmac(d.codeIndexKey, candidate), codeId, nowMs, expiresAtMs)) digits = candidate;
    }
    if (digits === undefined) throw new Error('could not draw a unique payment code');
    await tx
      .insertInto('pc_codes')
      .values({
        id: codeId,
        code_hmac: codeHmac(d.codeIndexKey, digits),
        qr_nonce: qrNonce,
        subject: claims.sub,
        owner: input.owner,
        amount_limit: input.request.amountLimit,
        currency: input.request.currency,
        device_id: input.request.deviceId,
        payee: input.request.payee ?? null,
        stepup_id: claims.txn,
        token_jti: claims.jti,
        acr: claims.acr,
        status: 'issued',
        issued_at: nowMs,
        expires_at: expiresAtMs,
        redeemed_at: null,
        redemption_id: null,
      })
      .execute();
    await d.events.append(tx, {
      type: 'code.issued',
      actor: input.owner,
      subject: claims.sub,
      requestId: input.requestId ?? null,
      // The code itself never goes into the log: its id identifies it.
      data: { codeId, stepupId: claims.txn, jti: claims.jti, acr: claims.acr, amountLimit: input.request.amountLimit, currency: input.request.currency, deviceId: input.request.deviceId, payee: input.request.payee ?? null },
    });
    return digits;
  }));
  if (code === undefined) {
    // The replay store already lets one request through per token; this is the belt to its braces.
    throw new PaymentCodeError('replayed', { challenge: d.gate.challenge(ISSUE_ACTION) });
  }

  const signedQr = await signQr(
    d.qrKeys,
    d.publicUrl,
    qrClaimsFor(d.subjectHandleKey, { subject: claims.sub, issuedAtMs: nowMs, expiresAtMs, qrNonce, amountLimit: input.request.amountLimit, currency: input.request.currency, payee: input.request.payee ?? null }),
  );
  return {
    codeId,
    code,
    codeGrouped: groupCode(code),
    subject: claims.sub,
    amountLimit: input.request.amountLimit,
    currency: input.request.currency,
    deviceId: input.request.deviceId,
    payee: input.request.payee ?? null,
    issuedAt: now,
    expiresAt: new Date(expiresAtMs),
    acr: claims.acr,
    signedQr,
    imageHandle: d.sealer.seal(code, imageHandleAad(codeId)),
  };
}

/** The three pictures at once (the demo wallet, and API callers that ask for `images: "inline"`). */
export async function renderCode(issued: IssuedCode, observe: PhaseObserver = () => {}): Promise<RenderedCode> {
  const [barcodePng, plainQr, signedQrPng] = await timed(observe, 'render', () => Promise.all([code128Png(issued.code), qrPng(issued.code, 6), qrPng(issued.signedQr, 3)]));
  return { ...issued, barcodePng, qrPng: plainQr, signedQrPng };
}
