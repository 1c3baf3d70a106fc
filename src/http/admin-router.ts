import { Router } from 'express';
import type { Gateway } from '../gateway.ts';
import type { ApiRegistry } from './api-registry.ts';

// PLACEHOLDER: replaced by the work that owns this router.
export function adminRouter(_gw: Gateway, _api: ApiRegistry): Router {
  return Router();
}
