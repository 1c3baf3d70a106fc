import { SmsSendError } from './sms-sender.ts';

export interface PostResult {
  status: number;
  /** The response body (at most MAX_BODY_BYTES, as text). */
  body: string;
}

const MAX_BODY_BYTES = 64 * 1024;

/**
 * POSTs and reads the answer, all within `timeoutMs`. A deadline or connection failure
 * becomes an SmsSendError, never an unhandled rejection; redirects are not followed (a
 * provider API never redirects, and following one could carry credentials elsewhere).
 */
export async function postWithTimeout(url: string, init: { headers: Record<string, string>; body: string }, timeoutMs: number): Promise<PostResult> {
  const signal = AbortSignal.timeout(timeoutMs);
  let response: Response;
  try {
    response = await fetch(url, { method: 'POST', headers: init.headers, body: init.body, redirect: 'manual', signal });
  } catch (err) {
    throw new SmsSendError(isTimeout(err, signal) ? 'timeout' : 'network');
  }
  try {
    const bytes = await readLimited(response);
    return { status: response.status, body: bytes.toString('utf8') };
  } catch (err) {
    throw new SmsSendError(isTimeout(err, signal) ? 'timeout' : 'network', { httpStatus: response.status });
  }
}

function isTimeout(err: unknown, signal: AbortSignal): boolean {
  return signal.aborted || (err instanceof DOMException && (err.name === 'TimeoutError' || err.name === 'AbortError'));
}

async function readLimited(response: Response): Promise<Buffer> {
  if (response.body === null) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response.body) {
    const buf = Buffer.from(chunk as Uint8Array);
    total += buf.length;
    // Leaving the loop cancels the stream: an oversized answer is cut, not buffered.
    if (total > MAX_BODY_BYTES) break;
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}

/** JSON.parse that answers undefined for anything that is not a JSON object. */
export function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
