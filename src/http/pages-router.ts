import { Router } from 'express';
import type { Gateway } from '../gateway.ts';

// PLACEHOLDER: replaced by the work that owns the pages.
export function pagesRouter(_gw: Gateway): Router {
  return Router();
}
