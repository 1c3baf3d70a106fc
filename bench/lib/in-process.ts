// The work of an endpoint without HTTP: the same flow functions the route calls, in this
// process, with as many requests in flight as the load has connections. It splits the cost of
// an endpoint into what the HTTP layer (express, middleware, sockets) adds and what the
// step-up work itself costs, so a target can be checked against what no HTTP layer could remove.
import type { Gateway } from '../../src/gateway.ts';
import { verifyClientSecret } from '../../src/flows/clients.ts';
import { pollStepUpToken } from '../../src/flows/stepup-token.ts';
import { consumeRate, consumeRates } from '../../src/http/rate-limit.ts';
import { authorizeTicket, verifyStepUpFactor } from '../../src/flows/verify-stepup-factor.ts';
import { parseBasicCredentials } from '../../src/http/client-auth.ts';

export interface InProcessRate {
  perSecond: number;
  perCpuSecond: number;
  ops: number;
}

/** `op` over `items` with `concurrency` in flight; CPU and wall time of this process, the first `warmFraction` unmeasured. */
export async function inFlight<T>(items: readonly T[], concurrency: number, op: (item: T) => Promise<void>, warmFraction = 0.1): Promise<InProcessRate> {
  // The first tenth (by default) warms the JIT up, unmeasured.
  const warm = Math.floor(items.length * warmFraction);
  let next = 0;
  const drain = async (until: number) => {
    while (next < until) await op(items[next++] as T);
  };
  await Promise.all(Array.from({ length: concurrency }, () => drain(warm)));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, () => drain(items.length)));
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const ops = items.length - warm;
  return { perSecond: ops / wall, perCpuSecond: ops / Math.max((cpu.user + cpu.system) / 1e6, 1e-6), ops };
}

/**
 * `POST /v1/stepup/{id}/token` without HTTP: the address counter (middleware), the client's
 * Basic credentials checked (client-auth), the client counter, the hand-out with its audit
 * record and the signature (pollStepUpToken), and the JSON answer serialised.
 */
export async function tokenWorkInProcess(gw: Gateway, ids: readonly string[], basic: string, concurrency: number): Promise<InProcessRate> {
  const limits = gw.config.rateLimits;
  return inFlight(ids, concurrency, async (id) => {
    await consumeRate(gw, 'ip', '127.0.0.1', limits.perIp);
    const credentials = parseBasicCredentials(basic);
    if (credentials === undefined) throw new Error('bench: bad Basic credentials');
    const auth = await verifyClientSecret(gw, credentials.clientId, credentials.secret);
    if (!auth.ok) throw new Error(`bench: client authentication failed: ${auth.reason}`);
    await consumeRate(gw, 'client', credentials.clientId, limits.perClient);
    const issued = await pollStepUpToken(gw, id, credentials.clientId, { ip: '127.0.0.1', requestId: null });
    JSON.stringify({ step_up_token: issued.stepUpToken, token_type: 'stepup+jwt', expires_in: issued.expiresIn });
  });
}

/**
 * `POST /v1/stepup/{id}/verify` with a one-time code (`totp`, `hardware_otp`), without HTTP:
 * the address and step-up counters (one statement, as the middleware charges them), the
 * ticket check, the whole verification (attempt charged, code compared, counter burnt,
 * policy re-checked, audit) and the JSON answer serialised. `warmFraction` of the items
 * (default a tenth) warm the JIT up first, unmeasured.
 */
export async function otpWorkInProcess(gw: Gateway, factor: 'totp' | 'hardware_otp', pending: readonly { id: string; ticket: string; code: string }[], concurrency: number, warmFraction?: number, before?: () => void): Promise<InProcessRate> {
  const limits = gw.config.rateLimits;
  return inFlight(
    pending,
    concurrency,
    async (p) => {
      before?.();
      await consumeRates(gw, [{ bucket: 'ip', subject: '127.0.0.1', limit: limits.perIp }, { bucket: 'stepup_user_ip', subject: '127.0.0.1', limit: limits.stepupUserPerIp }]);
      const stepUp = await authorizeTicket(gw, p.id, p.ticket);
      const result = await verifyStepUpFactor(gw, stepUp, { factor, input: { code: p.code } }, { ip: '127.0.0.1', requestId: null });
      if (!result.completed) throw new Error(`bench: the ${factor} verification did not complete the step-up`);
      JSON.stringify({ status: result.stepUp.status, completed: result.completed, remaining: [] });
    },
    warmFraction,
  );
}

/** otpWorkInProcess with TOTP codes; `before` runs ahead of each verification (bench/http-overhead.ts). */
export function totpWorkInProcess(gw: Gateway, pending: readonly { id: string; ticket: string; code: string }[], concurrency: number, before?: () => void): Promise<InProcessRate> {
  return otpWorkInProcess(gw, 'totp', pending, concurrency, undefined, before);
}
