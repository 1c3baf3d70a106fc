/** The factor-policy module: pure model, validation and evaluation (no I/O). See README.md here. */
export * from './acr.ts';
export * from './conditions.ts';
export * from './decimal.ts';
export * from './demo-policies.ts';
export * from './diff-policy-sets.ts';
export * from './evaluate-policies.ts';
export * from './policy-file.ts';
export * from './policy-schema.ts';
export * from './validate-policy-set.ts';
