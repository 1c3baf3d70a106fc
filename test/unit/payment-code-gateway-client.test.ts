import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { GatewayClient } from '../../src/payment-code/gateway-client.ts';
import { createPaymentCodeLogger } from '../../src/payment-code/logger.ts';
import { PaymentCodeError } from '../../src/payment-code/errors.ts';
import { systemClock } from '../../src/verifier/index.ts';

/**
 * P's gateway client over node:http (kept-alive connections): what it sends, and that every
 * way a gateway can misbehave — no answer, a redirect, an endless answer, not JSON, gone — is
 * `gateway_unavailable` (P answers 503), never a hang or a crash.
 */
type Mode = 'ok' | 'pending' | 'hang' | 'redirect' | 'huge' | 'garbage';

describe('payment-code gateway client (node:http)', () => {
  let server: Server;
  let base: string;
  let mode: Mode = 'ok';
  const seen: { method: string; url: string; headers: IncomingMessage['headers']; body: string; socket: number }[] = [];
  const sockets = new Map<unknown, number>();
  let client: GatewayClient;

  before(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString('utf8');
      });
      req.on('end', () => {
        if (!sockets.has(req.socket)) sockets.set(req.socket, sockets.size);
        seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, socket: sockets.get(req.socket) as number });
        if (mode === 'hang') return;
        if (mode === 'redirect') return void res.writeHead(307, { location: 'http://127.0.0.1:1/elsewhere' }).end();
        if (mode === 'garbage') return void res.writeHead(200, { 'content-type': 'application/json' }).end('not json');
        if (mode === 'huge') {
          res.writeHead(200, { 'content-type': 'application/json' });
          const chunk = Buffer.alloc(64 * 1024, 'a');
          const more = () => {
            while (res.write(chunk)) {
              if (res.destroyed) return;
            }
            res.once('drain', more);
          };
          res.on('error', () => {});
          more();
          return;
        }
        if (mode === 'pending') return void res.writeHead(400, { 'content-type': 'application/json', 'retry-after': '3' }).end('{"code":"authorization_pending"}');
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"step_up_token":"tok","expires_in":120}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    client = new GatewayClient({
      baseUrl: base,
      issuer: base,
      auth: { method: 'client_secret_basic', clientId: 'cli_p', secret: 's3cr:t' },
      timeoutSeconds: 1,
      clock: systemClock,
      logger: createPaymentCodeLogger('silent'),
    });
  });
  after(async () => {
    client?.close();
    server?.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('posts JSON with client_secret_basic, reads the answer, and keeps the connection for the next call', async () => {
    mode = 'ok';
    seen.length = 0;
    assert.deepEqual(await client.pollToken('stp_abc/../x'), { status: 'issued', token: 'tok', expiresIn: 120 });
    assert.deepEqual(await client.pollToken('stp_def'), { status: 'issued', token: 'tok', expiresIn: 120 });
    const [first, second] = seen as [(typeof seen)[0], (typeof seen)[0]];
    assert.equal(first.method, 'POST');
    assert.equal(first.url, '/v1/stepup/stp_abc%2F..%2Fx/token', 'the id is one path segment');
    assert.equal(first.headers['content-type'], 'application/json');
    assert.equal(first.headers.authorization, `Basic ${Buffer.from('cli_p:s3cr%3At').toString('base64')}`);
    assert.equal(first.body, '{}');
    assert.equal(first.socket, second.socket, 'one kept-alive connection');
  });

  it('passes Retry-After of a pending step-up', async () => {
    mode = 'pending';
    assert.deepEqual(await client.pollToken('stp_abc'), { status: 'pending', code: 'authorization_pending', retryAfterSeconds: 3 });
  });

  for (const m of ['hang', 'redirect', 'huge'] as const) {
    it(`a gateway that ${m === 'hang' ? 'never answers' : m === 'redirect' ? 'redirects' : 'sends an endless answer'} is gateway_unavailable`, async () => {
      mode = m;
      await assert.rejects(client.pollToken('stp_abc'), (err: unknown) => err instanceof PaymentCodeError && err.code === 'gateway_unavailable' && err.status === 503);
    });
  }

  it('an answer that is not JSON is read as an empty one (the caller decides: here a failure)', async () => {
    mode = 'garbage';
    await assert.rejects(client.pollToken('stp_abc'), (err: unknown) => err instanceof PaymentCodeError && err.code === 'gateway_unavailable');
  });

  it('a gateway that is not there is gateway_unavailable', async () => {
    const gone = new GatewayClient({ baseUrl: 'http://127.0.0.1:1', issuer: base, auth: { method: 'client_secret_basic', clientId: 'c', secret: 's' }, timeoutSeconds: 1, clock: systemClock, logger: createPaymentCodeLogger('silent') });
    try {
      await assert.rejects(gone.pollToken('stp_abc'), (err: unknown) => err instanceof PaymentCodeError && err.code === 'gateway_unavailable');
    } finally {
      gone.close();
    }
  });
});
