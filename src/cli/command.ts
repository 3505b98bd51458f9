import type { Argv, CommandModule } from 'yargs';
import { closeContext, createContext, reportError, type CommandContext, type GlobalFlags } from './context.js';
import { INVOCATION_KEY, type Invocation } from './invocation.js';
import { quoteValue } from '../names.js';

export interface MailqCommand<A> {
  command: string | string[];
  describe: string;
  builder?: (yargs: Argv<GlobalFlags>) => Argv<A>;
  /** Maps parsed flags onto settings (the zod schema's shape), e.g. worker options. */
  settings?: (argv: A & GlobalFlags) => Record<string, unknown>;
  /** The command can run without a configured database (it finds or starts one itself). */
  databaseOptional?: boolean;
  /** Does the work through the library and prints; returns the exit code (default 0). */
  run(context: CommandContext, argv: A & GlobalFlags): Promise<number | void>;
}

/**
 * yargs reads `--json=maybe` as false and runs the command. A boolean flag given a value takes
 * true or false only; anything else is a usage error like any other bad value.
 */
function assertBooleanFlags(booleans: readonly string[], argv: readonly string[]): void {
  const flags = new Set(booleans.flatMap((key) => [key, key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)]));
  for (const arg of argv) {
    if (arg === '--') return;
    const match = /^--(?:no-)?([^=]+)=(.*)$/s.exec(arg);
    if (match && flags.has(match[1]!) && !/^(true|false)$/i.test(match[2]!)) {
      throw new Error(`--${match[1]} takes no value (or true/false), got ${quoteValue(match[2])}`);
    }
  }
}

/** The run a command belongs to: yargs hands it over in the parse context. */
function invocationOf(argv: unknown): Invocation {
  return (argv as Record<string, Invocation>)[INVOCATION_KEY]!;
}

/** Wraps a command: settings, one Mailq per invocation, one-line errors, a closed pool, an exit code. */
export function defineCommand<A>(spec: MailqCommand<A>): CommandModule<GlobalFlags, A> {
  const build = spec.builder ?? ((yargs) => yargs as unknown as Argv<A>);
  return {
    command: spec.command,
    describe: spec.describe,
    builder: ((yargs: Argv<GlobalFlags>) => {
      const built = build(yargs);
      return built.check((argv) => {
        assertBooleanFlags((built as unknown as { getOptions(): { boolean: string[] } }).getOptions().boolean, invocationOf(argv).argv);
        // yargs leaves what follows `--` unread (and unchecked): no verb takes such arguments.
        const extra = argv._.slice(1);
        if (extra.length > 0) throw new Error(`unexpected argument${extra.length === 1 ? '' : 's'}: ${extra.map(quoteValue).join(' ')}`);
        return true;
      });
    }) as CommandModule<GlobalFlags, A>['builder'],
    handler: async (argv) => {
      const args = argv as unknown as A & GlobalFlags;
      const invocation = invocationOf(argv);
      let context: CommandContext | undefined;
      try {
        context = await createContext(args as A & GlobalFlags & Record<string, unknown>, spec.settings?.(args) ?? {}, invocation, { databaseOptional: spec.databaseOptional, env: invocation.env });
        const code = await spec.run(context, args);
        invocation.exitCode = typeof code === 'number' ? code : 0;
      } catch (error) {
        invocation.exitCode = reportError(error, invocation.output, Boolean(args.verbose), context?.settings.databaseUrl || args.databaseUrl);
      } finally {
        if (context) await closeContext(context).catch(() => undefined);
      }
    },
  };
}
