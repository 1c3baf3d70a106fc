import { Router } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import type { ApiRegistry } from './api-registry.ts';

export function healthRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  api.route(router, {
    method: 'get', path: '/healthz', tag: 'operations', summary: 'Liveness: the process serves requests.',
    responses: { 200: { description: 'alive', schema: z.object({ status: z.literal('ok') }) } },
  }, [], (_req, res) => {
    res.json({ status: 'ok' });
  });
  api.route(router, {
    method: 'get', path: '/readyz', tag: 'operations', summary: 'Readiness: the database answers.',
    responses: { 200: { description: 'ready', schema: z.object({ status: z.literal('ready'), database: z.string() }) }, 503: { description: 'database unreachable' } },
  }, [], async (_req, res) => {
    try {
      await gw.store.ping();
    } catch (err) {
      throw new AppError('service_unavailable', { detail: 'database unreachable', cause: err });
    }
    res.json({ status: 'ready', database: gw.store.dialect });
  });
  router.get('/metrics', async (_req, res) => {
    res.type(gw.metrics.registry.contentType).send(await gw.metrics.registry.metrics());
  });
  return router;
}
