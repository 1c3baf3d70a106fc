// A load generator in its own process, so that a measurement in the server's process counts
// the server's CPU only: reads a JSON file of requests and sends each once with autocannon.
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

const [url, file, connections] = process.argv.slice(2) as [string, string, string];
const requests = JSON.parse(readFileSync(file, 'utf8')) as { method: string; path: string; headers: Record<string, string>; body?: string }[];
let next = 0;
const result = await autocannon({
  url,
  connections: Number(connections),
  amount: requests.length,
  requests: [{ setupRequest: (req: object) => ({ ...req, ...requests[next++ % requests.length] }) }],
} as never);
process.stdout.write(`${JSON.stringify({ ok: result['2xx'], non2xx: result.non2xx, errors: result.errors + result.timeouts })}\n`);
