import { Router } from 'express';
import { z } from 'zod';
import { CLIENT_ASSERTION_ALGS } from '../flows/clients.ts';
import type { Gateway } from '../gateway.ts';
import { JWKS_MAX_AGE_SECONDS, SIGNING_ALGS } from '../stepup/signing-keys.ts';
import type { ApiRegistry } from './api-registry.ts';

export const ACR_VALUES = ['urn:stepgate:aal1', 'urn:stepgate:aal2', 'urn:stepgate:aal3'] as const;
export const AMR_VALUES = ['pwd', 'sms', 'otp', 'hwk', 'swk', 'user', 'pin', 'fpt', 'mfa'] as const;

const jwksSchema = z.object({ keys: z.array(z.record(z.string(), z.unknown())) });

export function wellKnownRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const base = gw.config.http.publicUrl.replace(/\/$/, '');
  api.route(router, {
    method: 'get', path: '/.well-known/jwks.json', tag: 'discovery',
    summary: 'Public keys that verify step-up tokens (active key and recently retired keys).',
    responses: { 200: { description: 'JWKS', schema: jwksSchema } },
  }, [], async (_req, res) => {
    const jwks = await gw.keys.jwks();
    // Set only once the keys are read: a failed read stays an uncacheable (no-store) error,
    // which a proxy must not hand out for a minute in place of the key set.
    res.setHeader('Cache-Control', `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
    res.json(jwks);
  });
  api.route(router, {
    method: 'get', path: '/.well-known/stepgate-configuration', tag: 'discovery',
    summary: 'Discovery document: issuer, JWKS URI, endpoints, supported acr/amr/algorithms.',
    responses: { 200: { description: 'configuration', schema: z.record(z.string(), z.unknown()) } },
  }, [], (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.json({
      issuer: base,
      jwks_uri: `${base}/.well-known/jwks.json`,
      stepup_endpoint: `${base}/v1/stepup`,
      token_endpoint: `${base}/v1/stepup/{stepup_id}/token`,
      openapi_uri: `${base}/openapi.json`,
      token_type: 'stepup+jwt',
      signing_alg_values_supported: SIGNING_ALGS,
      acr_values_supported: ACR_VALUES,
      amr_values_supported: AMR_VALUES,
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: CLIENT_ASSERTION_ALGS,
      // private_key_jwt assertions name this as their `aud` (the generic token endpoint URL is accepted too).
      client_assertion_audience: base,
      authorization_details_types_supported: 'any action configured in a policy',
    });
  });
  return router;
}
