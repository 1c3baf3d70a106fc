import { Router } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import type { ApiRegistry } from './api-registry.ts';
import { masterKeyStillOpens } from '../crypto/master-key-check.ts';

export function healthRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  api.route(router, {
    method: 'get', path: '/healthz', tag: 'operations', summary: 'Liveness: the process serves requests.',
    responses: { 200: { description: 'alive', schema: z.object({ status: z.literal('ok') }) } },
  }, [], (_req, res) => {
    res.json({ status: 'ok' });
  });
  api.route(router, {
    method: 'get', path: '/readyz', tag: 'operations', summary: 'Readiness: the database answers and the master key opens its sealed secrets.',
    responses: { 200: { description: 'ready', schema: z.object({ status: z.literal('ready'), database: z.string() }) }, 503: { description: 'database unreachable, a failed write to the SQLite file (every write is refused until restart), or the master key no longer opens the sealed secrets (rotated by another process: restart with the new key)' } },
  }, [], async (_req, res) => {
    let opens: boolean;
    try {
      await gw.store.ping();
      opens = await masterKeyStillOpens(gw.store.db, gw.sealer);
    } catch (err) {
      throw new AppError('service_unavailable', { detail: 'database unreachable', cause: err });
    }
    if ((gw.store.commitStats?.failedFlushes ?? 0) > 0) {
      // After a failed WAL fdatasync every write is refused (src/store/node-sqlite-dialect.ts).
      throw new AppError('service_unavailable', { detail: 'a write to the database file failed: restart the process' });
    }
    if (!opens) {
      gw.logger.error({ keyId: gw.sealer.currentKeyId }, 'the master key does not open the sealed secrets: restart with the current key');
      throw new AppError('service_unavailable', { detail: 'the master key does not open the sealed secrets' });
    }
    res.json({ status: 'ready', database: gw.store.dialect });
  });
  router.get('/metrics', async (_req, res) => {
    res.type(gw.metrics.registry.contentType).send(await gw.metrics.registry.metrics());
  });
  return router;
}
