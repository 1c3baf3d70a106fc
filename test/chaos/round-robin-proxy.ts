import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A tiny HTTP load balancer for the chaos tests: each request goes to the next backend in
 * turn (round robin). Like nginx with passive health checks and `proxy_next_upstream error`,
 * a backend that refuses the connection is marked down for a while and the request is sent
 * to the next one — safe for any method, since nothing reached the dead backend. A backend
 * that dies after the request was sent is not retried (that could double a non-idempotent
 * POST): the client gets 502, and the chaos tests count those as failed requests.
 */
export interface RoundRobinProxy {
  url: string;
  port: number;
  /** Requests answered per backend index, and 502s. */
  readonly stats: { perBackend: number[]; badGateway: number; retried: number };
  close(): Promise<void>;
}

const DOWN_MS = 3000;

export async function startRoundRobinProxy(backends: { port: number }[]): Promise<RoundRobinProxy> {
  // Idle upstream connections are dropped after 2 s, before the gateway's own keep-alive
  // timeout (5 s) closes them: reusing one the backend is closing would fail a request that
  // never reached it (nginx's upstream keepalive_timeout is set below the backend's too).
  const agents = backends.map(() => new Agent({ keepAlive: true, maxSockets: 64, timeout: 2000 }));
  const downUntil = backends.map(() => 0);
  const stats = { perBackend: backends.map(() => 0), badGateway: 0, retried: 0 };
  let next = 0;

  function pick(exclude: Set<number>): number | undefined {
    for (let i = 0; i < backends.length; i += 1) {
      const idx = (next + i) % backends.length;
      if (!exclude.has(idx) && downUntil[idx]! <= Date.now()) {
        next = idx + 1;
        return idx;
      }
    }
    // Everything is marked down: try one anyway (it may be back).
    for (let i = 0; i < backends.length; i += 1) if (!exclude.has(i)) return i;
    return undefined;
  }

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const tried = new Set<number>();
      const attempt = () => {
        const idx = pick(tried);
        if (idx === undefined) {
          stats.badGateway += 1;
          res.writeHead(502, { 'content-type': 'text/plain' }).end('no backend');
          return;
        }
        tried.add(idx);
        const headers = { ...req.headers, 'x-forwarded-for': req.headers['x-forwarded-for'] ?? '127.0.0.1' };
        const out = request({ host: '127.0.0.1', port: backends[idx]!.port, method: req.method, path: req.url, headers, agent: agents[idx] }, (up) => {
          stats.perBackend[idx]! += 1;
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
          up.on('error', () => res.destroy());
        });
        let sent = false;
        out.on('socket', (s) => {
          if (!s.connecting) sent = true;
          else
            s.once('connect', () => {
              sent = true;
            });
        });
        out.on('error', (err: NodeJS.ErrnoException) => {
          const refused = err.code === 'ECONNREFUSED' || (!sent && err.code === 'ECONNRESET');
          if (refused) {
            downUntil[idx] = Date.now() + DOWN_MS;
            stats.retried += 1;
            attempt();
            return;
          }
          stats.badGateway += 1;
          if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' }).end('backend failed');
          else res.destroy();
        });
        out.end(body);
      };
      attempt();
    });
  });
  server.keepAliveTimeout = 5000;
  // A thousand clients connect at once: the default backlog (511) would reset some of them.
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        for (const a of agents) a.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
