// Exponential moving average as TensorBoard's smoothing slider draws it: debiased, so the
// first points are not pulled toward zero; gaps (null) stay gaps and do not reset it.
export function ema(values, weight) {
  if (!(weight > 0)) return values.slice();
  let last = 0;
  let count = 0;
  return values.map((v) => {
    if (v === null || v === undefined || !Number.isFinite(v)) return null;
    last = last * weight + (1 - weight) * v;
    count += 1;
    return last / (1 - weight ** count);
  });
}
