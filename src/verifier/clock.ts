/** The verifier's time source; inject a fixed one in tests. Same shape as the gateway's clock. */
export interface VerifierClock {
  now(): Date;
}

export const systemClock: VerifierClock = { now: () => new Date() };
