import type { Argv, CommandModule } from 'yargs';
import { closeContext, createContext, reportError, type CommandContext, type GlobalFlags } from './context.js';
import { INVOCATION_KEY, type Invocation } from './invocation.js';

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

/** Wraps a command: settings, one Mailq per invocation, one-line errors, a closed pool, an exit code. */
export function defineCommand<A>(spec: MailqCommand<A>): CommandModule<GlobalFlags, A> {
  return {
    command: spec.command,
    describe: spec.describe,
    builder: (spec.builder ?? ((yargs) => yargs as unknown as Argv<A>)) as CommandModule<GlobalFlags, A>['builder'],
    handler: async (argv) => {
      const args = argv as unknown as A & GlobalFlags;
      const invocation = (argv as unknown as Record<string, Invocation>)[INVOCATION_KEY]!;
      let context: CommandContext | undefined;
      try {
        context = await createContext(args as A & GlobalFlags & Record<string, unknown>, spec.settings?.(args) ?? {}, invocation, { databaseOptional: spec.databaseOptional });
        const code = await spec.run(context, args);
        invocation.exitCode = typeof code === 'number' ? code : 0;
      } catch (error) {
        invocation.exitCode = reportError(error, invocation.output, Boolean(args.verbose), context?.settings.databaseUrl);
      } finally {
        if (context) await closeContext(context).catch(() => undefined);
      }
    },
  };
}
