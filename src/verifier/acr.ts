/** Stepgate's authentication context classes, weakest first (DESIGN.md §1 "ACR"). */
export const STEPUP_ACR_VALUES = ['urn:stepgate:aal1', 'urn:stepgate:aal2', 'urn:stepgate:aal3'] as const;

export type StepUpAcr = (typeof STEPUP_ACR_VALUES)[number];

export function isStepUpAcr(value: unknown): value is StepUpAcr {
  return typeof value === 'string' && (STEPUP_ACR_VALUES as readonly string[]).includes(value);
}

/** True when `acr` is a known class at least as strong as `required`. Unknown values never satisfy. */
export function acrSatisfies(acr: unknown, required: StepUpAcr): boolean {
  if (!isStepUpAcr(acr)) return false;
  return STEPUP_ACR_VALUES.indexOf(acr) >= STEPUP_ACR_VALUES.indexOf(required);
}
