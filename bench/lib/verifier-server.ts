// A relying service's token check over HTTP, in its own process: node:http, the project's
// verifier (src/verifier: JWKS cache, verifyStepUpToken) and a SQLite replay store, as the
// payment-code service runs it, with nothing else (no code rendering, no database of its own).
// POST /verify  Authorization: Bearer <step-up token>  {"subject": "usr_…"}  → 200 {"jti"} | 401
// Run: node bench/lib/verifier-server.ts JWKS_URI ISSUER AUDIENCE DATA_DIR   (prints its port)
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createJwksCache, SqliteReplayStore, StepUpTokenError, verifyStepUpToken } from '../../src/verifier/index.ts';
import { ACTION, CONTEXT } from './seed.ts';

const [jwksUri = '', issuer = '', audience = '', dataDir = '/tmp'] = process.argv.slice(2);
const jwks = createJwksCache({ jwksUri });
const replayStore = new SqliteReplayStore({ file: join(dataDir, `verifier-replay-${process.pid}.sqlite`) });

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    let subject = '';
    try {
      subject = String((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { subject?: unknown }).subject ?? '');
    } catch {
      // refused below
    }
    verifyStepUpToken(token, { issuer, audience, jwks, requiredAcr: 'urn:stepgate:aal2', expectedSubject: subject, expectedAction: ACTION, expectedContext: CONTEXT, replayStore })
      .then((claims) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jti: claims.jti }));
      })
      .catch((err: unknown) => {
        res.writeHead(err instanceof StepUpTokenError ? 401 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: err instanceof StepUpTokenError ? err.code : 'unavailable' }));
      });
  });
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as AddressInfo).port}\n`);
});
// A clean exit on SIGTERM, so --cpu-prof (npm run bench -- --profile DIR) writes its profile.
process.once('SIGTERM', () => {
  server.close();
  replayStore.close();
  process.exit(0);
});
