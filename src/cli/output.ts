import Table from 'cli-table3';

/** What commands print to. Tests capture it; the real CLI writes to stdout/stderr. */
export interface Output {
  out(text: string): void;
  err(text: string): void;
  isTTY: boolean;
}

export const processOutput: Output = {
  out: (text) => void process.stdout.write(`${text}\n`),
  err: (text) => void process.stderr.write(`${text}\n`),
  isTTY: Boolean(process.stdout.isTTY),
};

export function table(head: string[], rows: Array<Array<string | number>>): string {
  const rendered = new Table({ head, style: { head: [], border: [] } });
  rendered.push(...rows.map((row) => row.map(String)));
  return rendered.toString();
}

/** A two-column summary (label, value). */
export function summaryTable(entries: Array<[string, string | number]>): string {
  const rendered = new Table({ style: { head: [], border: [] } });
  rendered.push(...entries.map(([label, value]) => ({ [label]: String(value) })));
  return rendered.toString();
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

export function truncate(text: string, width: number): string {
  const oneLine = text.replace(/\s+/g, ' ').trim();
  return oneLine.length > width ? `${oneLine.slice(0, width - 1)}…` : oneLine;
}

export function formatTime(value: Date | string | null | undefined): string {
  if (!value) return '';
  const date = value instanceof Date ? value : new Date(value);
  return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
