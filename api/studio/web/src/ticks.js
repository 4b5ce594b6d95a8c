// Axis tick labels that read right at any magnitude: plain decimals in the everyday range,
// SI suffixes (k, M, G, T) for large values, scientific notation for small ones, with just
// enough digits to tell neighbouring ticks apart (2.6e-4..5.4e-4 reads 3.0e-4, 4.0e-4, …,
// never 0.001, 0, 0).

const SI = [
  [1e12, 'T'],
  [1e9, 'G'],
  [1e6, 'M'],
  [1e3, 'k'],
];

// Integer tick spacings only, for axes that count (steps, run numbers): never 0.5 or 1.5.
export const INTEGER_INCRS = Array.from({ length: 15 }, (_, p) => [1, 2, 5].map((m) => m * 10 ** p)).flat();

// How many decimals write ``step`` exactly (0.25 → 2, 5 → 0, 5e-5 → 5).
function decimalsOf(step) {
  for (let d = 0; d < 20; d++) {
    const scaled = step * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) <= 1e-6 * Math.max(1, scaled)) return d;
  }
  return 20;
}

function fixed(value, decimals) {
  const text = value.toFixed(decimals);
  return /^-0(\.0*)?$/.test(text) ? text.slice(1) : text;
}

// Labels for evenly spaced ticks ``splits`` that are ``step`` apart.
export function linearLabels(splits, step) {
  const finite = splits.filter((v) => v !== null && Number.isFinite(v));
  const top = Math.max(0, ...finite.map(Math.abs));
  if (top === 0) return splits.map((v) => (v === null ? null : '0'));
  const spacing = step > 0 ? step : top;
  const big = SI.find(([unit]) => top >= (unit === 1e3 ? 1e4 : unit));
  if (big) {
    const [unit, suffix] = big;
    const decimals = decimalsOf(spacing / unit);
    return splits.map((v) => (v === null ? null : v === 0 ? '0' : fixed(v / unit, decimals) + suffix));
  }
  if (top < 1e-2) {
    const exponent = Math.floor(Math.log10(top) + 1e-9);
    const decimals = decimalsOf(spacing / 10 ** exponent);
    return splits.map((v) => (v === null ? null : v === 0 ? '0' : `${fixed(v / 10 ** exponent, decimals)}e${exponent}`));
  }
  const decimals = decimalsOf(spacing);
  return splits.map((v) => (v === null ? null : fixed(v, decimals)));
}

// One power of ten as a label: 0.001 … 1000 written out, beyond that 1e-5, 1e6.
function power(value) {
  const exponent = Math.round(Math.log10(value));
  return exponent >= -3 && exponent <= 3 ? fixed(10 ** exponent, Math.max(0, -exponent)) : `1e${exponent}`;
}

// Labels for a log axis: every power of ten; within a single decade 2× and 5× as well.
export function logLabels(splits) {
  const finite = splits.filter((v) => v !== null && v > 0);
  const decades = finite.length ? Math.log10(Math.max(...finite) / Math.min(...finite)) : 0;
  return splits.map((v) => {
    if (v === null || !(v > 0)) return null;
    const exponent = Math.floor(Math.log10(v) + 1e-9);
    const mantissa = Math.round(v / 10 ** exponent);
    if (mantissa === 1) return power(v);
    if (decades < 1.5 && (mantissa === 2 || mantissa === 5)) return linearLabels([v], 10 ** exponent)[0];
    return null;
  });
}
