import { createHash } from 'node:crypto';
import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';

/** Commands a schedule must not run: they never return, or they are the scheduler itself. */
const LONG_RUNNING = new Set(['work', 'schedule', 'schedule:run']);

/**
 * One schedule entry, as written in the config file:
 * `{ cron: '0 2 * * *', timezone: 'America/Lima', run: 'sync-mailbox --queue', withoutOverlapping: true }`.
 * `run` is a mailq command line (without `mailq`), run in the scheduler's process.
 *
 * @example
 * const entry = scheduleEntrySchema.parse({ cron: '0 2 * * *', run: 'sync-mailbox --queue' });
 */
export const scheduleEntrySchema = z
  .object({
    cron: z.string().min(1),
    timezone: z.string().min(1).optional(),
    run: z.string().trim().min(1, 'run must be a mailq command line, e.g. "sync-mailbox --queue"'),
    withoutOverlapping: z.boolean().default(false),
    /** Identifies the entry in schedule_runs; defaults to the cron expression and the command. */
    name: z.string().min(1).max(191).optional(),
  })
  .superRefine((entry, ctx) => {
    if (entry.timezone && !isTimeZone(entry.timezone)) {
      ctx.addIssue({ code: 'custom', path: ['timezone'], message: `unknown timezone '${entry.timezone}' (use an IANA name such as America/Lima or UTC)` });
      return;
    }
    try {
      CronExpressionParser.parse(entry.cron, { tz: entry.timezone }).next();
    } catch (error) {
      ctx.addIssue({ code: 'custom', path: ['cron'], message: `invalid cron '${entry.cron}': ${(error as Error).message}` });
    }
    const verb = splitCommandLine(entry.run)[0] ?? '';
    if (LONG_RUNNING.has(verb)) ctx.addIssue({ code: 'custom', path: ['run'], message: `'${verb}' runs until stopped and cannot be scheduled` });
  });

export type ScheduleEntry = z.output<typeof scheduleEntrySchema>;
export type ScheduleEntryInput = z.input<typeof scheduleEntrySchema>;

/** The entry's identity in schedule_runs: its name, else its cron and command (hashed if too long). */
export function entryKey(entry: ScheduleEntry): string {
  if (entry.name) return entry.name;
  const key = `${entry.cron} ${entry.run}`;
  return key.length <= 191 ? key : `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

/** The latest slot at or before `now` (a slot exactly at `now` counts). */
export function latestSlot(entry: ScheduleEntry, now: Date): Date {
  return CronExpressionParser.parse(entry.cron, { currentDate: new Date(now.getTime() + 1), tz: entry.timezone }).prev().toDate();
}

/** The first slot after `now`. */
export function nextSlot(entry: ScheduleEntry, now: Date): Date {
  return CronExpressionParser.parse(entry.cron, { currentDate: now, tz: entry.timezone }).next().toDate();
}

/**
 * Splits a command line into argv like a shell would for plain words and quotes (no expansion).
 *
 * @example
 * splitCommandLine(`dispatch greet '{"to":"Ana"}'`); // ['dispatch', 'greet', '{"to":"Ana"}']
 */
export function splitCommandLine(line: string): string[] {
  const args: string[] = [];
  let current = '';
  let quote: '"' | "'" | undefined;
  let started = false;
  for (let index = 0; index < line.length; index++) {
    const char = line[index]!;
    if (quote) {
      if (char === quote) quote = undefined;
      else if (char === '\\' && quote === '"' && index + 1 < line.length) current += line[++index];
      else current += char;
    } else if (char === '"' || char === "'") {
      quote = char;
      started = true;
    } else if (/\s/.test(char)) {
      if (started) args.push(current);
      current = '';
      started = false;
    } else {
      if (char === '\\' && index + 1 < line.length) current += line[++index];
      else current += char;
      started = true;
    }
  }
  if (quote) throw new Error(`unclosed ${quote} in command line: ${line}`);
  if (started) args.push(current);
  return args;
}

function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}
