import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { newId } from '../../src/crypto/ids.ts';
import { sealTotpSecret, type TotpParams } from '../../src/factors/totp/index.ts';
import type { Gateway } from '../../src/gateway.ts';

/** A TOTP code from oathtool (an independent implementation), at a unix time in seconds. */
export function oathtoolTotp(secret: Buffer, params: TotpParams, unixSeconds: number): string {
  const r = spawnSync(
    'oathtool',
    [`--totp=${params.algorithm.toLowerCase()}`, `--digits=${params.digits}`, `--time-step-size=${params.period}s`, `--now=@${unixSeconds}`, secret.toString('hex')],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`oathtool failed: ${r.stderr}`);
  return r.stdout.trim();
}

export const DEFAULT_TOTP: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30 };

/**
 * An active TOTP factor written straight into the store (for step-up tests that are not
 * about enrolment; the enrolment flow has its own tests).
 */
export async function insertActiveTotp(gw: Gateway, userId: string, params: TotpParams = DEFAULT_TOTP, options: { secret?: Buffer; counter?: number } = {}) {
  const secret = options.secret ?? randomBytes(params.algorithm === 'SHA512' ? 64 : params.algorithm === 'SHA256' ? 32 : 20);
  const id = newId('fac');
  const now = gw.clock.now().getTime();
  await gw.store.db
    .insertInto('factors')
    .values({
      id,
      user_id: userId,
      type: 'totp',
      label: 'Authenticator app',
      status: 'active',
      secret_hash: null,
      secret_sealed: sealTotpSecret(gw.sealer, id, secret),
      params: JSON.stringify(params),
      counter: options.counter ?? 0,
      failures: 0,
      locked_until: null,
      created_at: now,
      updated_at: now,
      last_used_at: null,
    })
    .execute();
  return { id, secret };
}
