import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request as a fake provider received it. */
export interface Captured {
  method: string;
  /** Path and query, as sent. */
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export type FakeReply = { status: number; body?: string; contentType?: string } | 'hang';
export type FakeHandler = (req: Captured) => FakeReply;

export interface FakeHttpServer {
  url: string;
  requests: Captured[];
  handler: FakeHandler;
  close(): Promise<void>;
}

/** A local HTTP server standing in for an SMS provider: records every request, answers with `handler` ('hang' never answers). */
export async function fakeHttpServer(handler: FakeHandler): Promise<FakeHttpServer> {
  const state: FakeHttpServer = {
    url: '',
    requests: [],
    handler,
    close: async () => undefined,
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const captured: Captured = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      state.requests.push(captured);
      const reply = state.handler(captured);
      if (reply === 'hang') return;
      res.writeHead(reply.status, { 'content-type': reply.contentType ?? 'application/json' });
      res.end(reply.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}
