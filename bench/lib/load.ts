import autocannon from 'autocannon';

export interface LoadResult {
  /** Completed requests (2xx) per second. */
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  non2xx: number;
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
    ...(options.amount === undefined ? {} : { amount: options.amount }),
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
    durationSeconds,
  };
}
