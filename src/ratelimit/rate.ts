// A request rate as people write it: "100/min", "10/s", "60/1m".

export interface Rate {
  limit: number;
  perMs: number;
}

const MS_PER_UNIT: Record<string, number> = {
  ms: 1,
  s: 1_000,
  sec: 1_000,
  second: 1_000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hour: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
};

const RATE_PATTERN = /^(\d+)\s*\/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)$/i;

export function parseRate(text: string): Rate {
  const match = RATE_PATTERN.exec(text.trim());
  const unitMs = match ? unitToMs(match[3]!) : undefined;
  if (!match || unitMs === undefined) {
    throw new Error(
      `Invalid rate "${text}": expected <count>/<period>, like 100/min, 10/s or 60/1m ` +
        `(units: ms, s, m/min, h, d)`,
    );
  }
  const limit = Number(match[1]);
  const perMs = (match[2] === undefined ? 1 : Number(match[2])) * unitMs;
  if (limit < 1 || perMs <= 0) {
    throw new Error(`Invalid rate "${text}": the count and the period must be greater than zero`);
  }
  return { limit, perMs };
}

function unitToMs(unit: string): number | undefined {
  const singular = unit.toLowerCase().replace(/s$/, '');
  return MS_PER_UNIT[unit.toLowerCase()] ?? MS_PER_UNIT[singular];
}

const FORMAT_UNITS: Array<[string, number]> = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['min', 60_000],
  ['s', 1_000],
  ['ms', 1],
];

/** The inverse of parseRate, for summaries: { limit: 100, perMs: 60000 } → "100/min". */
export function formatRate(rate: Rate): string {
  const [unit, unitMs] = FORMAT_UNITS.find(([, ms]) => rate.perMs % ms === 0) ?? ['ms', 1];
  const count = rate.perMs / unitMs;
  return `${rate.limit}/${count === 1 ? '' : count}${unit}`;
}
