import { type Request, type Response, Router } from 'express';
import { z } from 'zod';
import type { AuditActor } from '../flows/users.ts';
import {
  clientResource,
  createClient,
  disableClient,
  getClient,
  listClients,
  MAX_ACTIONS,
  MAX_CLIENT_NAME_LENGTH,
  MAX_JWKS_KEYS,
  MAX_REDIRECT_URIS,
  rotateClientSecret,
  setClientJwks,
} from '../flows/clients.ts';
import type { Gateway } from '../gateway.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireRole } from './authorize.ts';
import { clientAssertionFields, clientOf, requireClient } from './client-auth.ts';
import { locals } from './request-context.ts';

/**
 * `/v1/admin/clients`: relying-service clients (admins change them, auditors read them),
 * and `/v1/clients/me`, where a client checks its own credentials.
 */

// A JWK Set as sent; the flow checks every key (public members only, accepted key types).
const jwksBody = z.strictObject({
  keys: z.array(z.record(z.string(), z.unknown())).max(MAX_JWKS_KEYS),
});

const createBody = z.strictObject({
  name: z.string().min(1).max(MAX_CLIENT_NAME_LENGTH),
  allowed_actions: z.array(z.string().max(200)).min(1).max(MAX_ACTIONS),
  redirect_uris: z.array(z.string().max(2000)).max(MAX_REDIRECT_URIS).optional(),
  auth_method: z.enum(['client_secret_basic', 'private_key_jwt']).optional(),
  jwks: jwksBody.optional(),
});

const clientSchema = z.object({
  client_id: z.string(),
  name: z.string(),
  auth_method: z.enum(['client_secret_basic', 'private_key_jwt']),
  allowed_actions: z.array(z.string()),
  redirect_uris: z.array(z.string()),
  jwks: z.object({ keys: z.array(z.record(z.string(), z.string())) }).nullable(),
  status: z.enum(['active', 'disabled']),
  created_at: z.string(),
  updated_at: z.string(),
  secret_rotated_at: z.string().nullable(),
});

const createdSchema = clientSchema.extend({
  client_secret: z.string().optional().describe('client_secret_basic only. Shown once: store it now, it cannot be read again.'),
});

const meSchema = z.object({
  client_id: z.string(),
  name: z.string(),
  auth_method: z.enum(['client_secret_basic', 'private_key_jwt']),
  allowed_actions: z.array(z.string()),
  redirect_uris: z.array(z.string()),
});

const TAG = 'Clients';
const READ_ROLES = ['admin', 'auditor'] as const;
const sessionErrors = {
  401: { description: 'No session (`unauthorized`).' },
  403: { description: 'Missing role (`forbidden`) or CSRF token (`csrf_failed`).' },
};

function who(req: Request, res: Response): AuditActor {
  return { actor: authOf(res).userId, ip: req.ip ?? null, requestId: locals(res).requestId };
}

function idParam(req: Request): string {
  return String(req.params.id ?? '');
}

export function clientsRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const admin = requireRole('admin');
  const reader = requireRole(...READ_ROLES);

  api.route(
    router,
    { method: 'get', path: '/v1/admin/clients', summary: 'List relying-service clients.', tag: TAG, security: ['session'], responses: { 200: { description: 'The clients.', schema: z.object({ clients: z.array(clientSchema) }) }, ...sessionErrors } },
    [reader],
    async (_req, res) => {
      const clients = await listClients(gw);
      res.json({ clients: clients.map(clientResource) });
    },
  );

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/clients',
      summary: 'Register a client. The response carries the client_secret (client_secret_basic) once.',
      tag: TAG,
      security: ['session'],
      body: createBody,
      responses: { 201: { description: 'Created.', schema: createdSchema }, ...sessionErrors },
    },
    [admin],
    async (req, res, { body }) => {
      const { client, clientSecret } = await createClient(
        gw,
        {
          name: body.name,
          actions: body.allowed_actions,
          redirectUris: body.redirect_uris,
          authMethod: body.auth_method,
          jwks: body.jwks,
        },
        who(req, res),
      );
      res.setHeader('Cache-Control', 'no-store');
      res.status(201).location(`/v1/admin/clients/${client.clientId}`).json({ ...clientResource(client), ...(clientSecret === undefined ? {} : { client_secret: clientSecret }) });
    },
  );

  api.route(
    router,
    { method: 'get', path: '/v1/admin/clients/:id', summary: 'Read a client.', tag: TAG, security: ['session'], responses: { 200: { description: 'The client.', schema: clientSchema }, ...sessionErrors, 404: { description: 'No such client.' } } },
    [reader],
    async (req, res) => {
      res.json(clientResource(await getClient(gw, idParam(req))));
    },
  );

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/clients/:id/rotate-secret',
      summary: 'Replace the client secret (client_secret_basic). The old secret stops working at once; the new one is shown once.',
      tag: TAG,
      security: ['session'],
      responses: {
        200: { description: 'The new secret.', schema: createdSchema.required({ client_secret: true }) },
        ...sessionErrors,
        404: { description: 'No such client.' },
        409: { description: 'The client is disabled or uses private_key_jwt.' },
      },
    },
    [admin],
    async (req, res) => {
      const { client, clientSecret } = await rotateClientSecret(gw, idParam(req), who(req, res));
      res.setHeader('Cache-Control', 'no-store');
      res.json({ ...clientResource(client), client_secret: clientSecret });
    },
  );

  api.route(
    router,
    {
      method: 'put',
      path: '/v1/admin/clients/:id/jwks',
      summary: 'Replace the public JWKS of a private_key_jwt client. Private and symmetric keys are refused.',
      tag: TAG,
      security: ['session'],
      body: jwksBody,
      responses: {
        200: { description: 'The client.', schema: clientSchema },
        ...sessionErrors,
        404: { description: 'No such client.' },
        409: { description: 'The client is disabled or uses client_secret_basic.' },
      },
    },
    [admin],
    async (req, res, { body }) => {
      res.json(clientResource(await setClientJwks(gw, idParam(req), body, who(req, res))));
    },
  );

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/clients/:id/disable',
      summary: 'Disable a client: its credentials stop working at once.',
      tag: TAG,
      security: ['session'],
      responses: { 200: { description: 'The client.', schema: clientSchema }, ...sessionErrors, 404: { description: 'No such client.' } },
    },
    [admin],
    async (req, res) => {
      res.json(clientResource(await disableClient(gw, idParam(req), who(req, res))));
    },
  );

  // A client checks its credentials. GET for client_secret_basic; POST also carries a
  // private_key_jwt assertion in the body.
  const meResponses = {
    200: { description: 'The authenticated client.', schema: meSchema },
    401: { description: 'Client authentication failed (`invalid_client`).' },
  };
  const me = (_req: Request, res: Response): void => {
    const client = clientOf(res);
    res.setHeader('Cache-Control', 'no-store');
    res.json({
      client_id: client.clientId,
      name: client.name,
      auth_method: client.authMethod,
      allowed_actions: client.allowedActions,
      redirect_uris: client.redirectUris,
    });
  };
  api.route(
    router,
    { method: 'get', path: '/v1/clients/me', summary: 'The authenticated client (check client_secret_basic credentials).', tag: TAG, security: ['clientBasic'], responses: meResponses },
    [requireClient(gw)],
    me,
  );
  api.route(
    router,
    {
      method: 'post',
      path: '/v1/clients/me',
      summary: 'The authenticated client; the body may carry a private_key_jwt client_assertion.',
      tag: TAG,
      security: ['clientBasic'],
      body: z.strictObject({ ...clientAssertionFields }),
      responses: meResponses,
    },
    [requireClient(gw)],
    me,
  );

  return router;
}
