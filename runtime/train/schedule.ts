/**
 * The learning-rate schedule of the official Locret trainer: transformers' get_linear_schedule_with_warmup with
 * 2000 warm-up steps out of 3000 (here: the first 2/3 of however many steps), stepped after each optimizer step,
 * so optimizer step s (0-based) uses lr · s / warmup while warming up, then decays linearly to 0 at `total`.
 */
export function warmupSteps(total: number): number {
  return Math.round((2 * total) / 3);
}

/** Learning rate of optimizer step `s` (0-based) out of `total`. */
export function lrAt(s: number, total: number, lr: number): number {
  const warm = warmupSteps(total);
  if (s < warm) return (lr * s) / Math.max(1, warm);
  return lr * Math.max(0, (total - s) / Math.max(1, total - warm));
}
