import autocannon from 'autocannon';

export interface LoadResult {
  /** Completed requests (2xx) per second. */
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  non2xx: number;
  /** Responses by status code. */
  statuses: Record<string, number>;
  durationSeconds: number;
}

export interface LoadRequest {
  method?: 'GET' | 'POST' | 'DELETE';
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** Mutates the request per call (autocannon `setupRequest`); `context` is per connection. */
  setupRequest?: (req: LoadRequest & { body?: string }, context: Record<string, unknown>) => LoadRequest;
  onResponse?: (status: number, body: string, context: Record<string, unknown>) => void;
}

export interface LoadOptions {
  url: string;
  connections: number;
  durationSeconds: number;
  /** A sequence each connection runs in order (a flow), or one request. */
  requests: LoadRequest[];
  /** Stop after this many requests in total (for finite inputs). */
  amount?: number;
}

/** Drives load with autocannon over loopback (keep-alive connections). */
export async function load(options: LoadOptions): Promise<LoadResult> {
  const started = Date.now();
  const result = await autocannon({
    url: options.url,
    connections: options.connections,
    duration: options.durationSeconds,
    // With `amount`, autocannon stops only at its next sample tick (sampleInt, 1 s by default):
    // a run of 1,500 requests that took 1.01 s came out as 2 s, half its rate. Ticks of 10 ms
    // keep that error under 3 % of a run of a third of a second.
    ...(options.amount === undefined ? {} : { amount: options.amount, sampleInt: 10 }),
    // biome-ignore lint/suspicious/noExplicitAny: autocannon's request types are looser than ours
    requests: options.requests as any,
  });
  const durationSeconds = (Date.now() - started) / 1000;
  const ok = result['2xx'];
  return {
    rps: ok / durationSeconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    requests: result.requests.total,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    statuses: Object.fromEntries(Object.entries((result as unknown as { statusCodeStats?: Record<string, { count: number }> }).statusCodeStats ?? {}).map(([k, v]) => [k, v.count])),
    durationSeconds,
  };
}

export interface FlowResult {
  /** Completed flows per second. */
  rps: number;
  p50: number;
  p99: number;
  ok: number;
  errors: number;
  durationSeconds: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

/**
 * Runs `flow(i)` (i = 0, 1, 2… across all workers) on `connections` concurrent workers until
 * `durationSeconds` passed or `limit` flows were started: for flows that talk to more than one
 * server (autocannon drives one). `flow` resolves true when the flow completed as it should.
 */
export async function runFlows(options: { connections: number; durationSeconds: number; limit: number; flow: (i: number) => Promise<boolean>; onError?: (err: unknown) => void }): Promise<FlowResult> {
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
  const started = performance.now();
  const until = started + options.durationSeconds * 1000;
  await Promise.all(
    Array.from({ length: options.connections }, async () => {
      while (performance.now() < until) {
        const i = next++;
        if (i >= options.limit) return;
        const t0 = performance.now();
        try {
          if (await options.flow(i)) latencies.push(performance.now() - t0);
          else errors += 1;
        } catch (err) {
          errors += 1;
          options.onError?.(err);
        }
      }
    }),
  );
  const durationSeconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return { rps: latencies.length / durationSeconds, p50: Math.round(percentile(latencies, 50)), p99: Math.round(percentile(latencies, 99)), ok: latencies.length, errors, durationSeconds };
}
