// The public API of the Stepgate verifier: what a relying service (the payment-code service,
// or any third party) embeds to accept step-up tokens. Imports nothing from the gateway.
export { acrSatisfies, isStepUpAcr, STEPUP_ACR_VALUES, type StepUpAcr } from './acr.ts';
export { systemClock, type VerifierClock } from './clock.ts';
export { firstContextDifference, jsonEqual, type JsonObject, type JsonValue } from './compare-context.ts';
export {
  isStepUpTokenError,
  isVerifierUnavailableError,
  StepUpTokenError,
  VerifierUnavailableError,
  type StepUpTokenErrorCode,
  type VerifierUnavailableCode,
} from './errors.ts';
export { createJwksCache, type JwksCache, type JwksCacheOptions, type KeyLookupHeader } from './jwks-cache.ts';
export type { ReplayStore } from './replay-store.ts';
export { MemoryReplayStore, type MemoryReplayStoreOptions } from './replay-store-memory.ts';
export { PostgresReplayStore, type PostgresReplayStoreOptions } from './replay-store-postgres.ts';
export { SqliteReplayStore, type SqliteReplayStoreOptions } from './replay-store-sqlite.ts';
export { type ConfusableScript, type DisplaySegment, displayTextProblem, mixedScripts, type MixedScriptReport } from './display-text.ts';
export {
  boundAmountProblem,
  canonicalAmount,
  comparedAmountProblem,
  currencyProblem,
  ISO_4217_MINOR_UNITS,
  minorUnitsOf,
  type MoneyProblem,
  type MoneyProblemCode,
} from './money.ts';
export { DUPLICATE_MEMBER, findDuplicateMember, JSON_PARSE_FAILED, jwsDuplicateMember, strictJsonBody, type StrictJsonBodyOptions } from './strict-json.ts';
export { requireStepUp, STEP_UP_REQUIRED, stepUpAuthorization, stepUpClaims, type RequireStepUpOptions } from './require-step-up.ts';
export {
  FORBIDDEN_HEADER_PARAMETERS,
  STEPUP_ALGORITHMS,
  STEPUP_TOKEN_TYP,
  verifyStepUpToken,
  type AuthorizationDetail,
  type StepUpClaims,
  type VerifyStepUpTokenOptions,
} from './verify-step-up-token.ts';
