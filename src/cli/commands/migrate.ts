import { migrateLatest, migrateRollback, migrationStatus, type MigrationStatus } from '../../schema/migrate.js';
import { defineCommand } from '../command.js';
import { table } from '../output.js';

export const migrateCommand = defineCommand({
  command: 'migrate',
  describe: 'Create or upgrade the mailq tables (the mailbox sync\'s too where it is enabled: --mailbox)',
  builder: (yargs) =>
    yargs
      .option('status', { type: 'boolean', describe: 'List applied and pending migrations', default: false })
      .option('rollback', { type: 'boolean', describe: 'Undo the last batch of migrations (of each enabled set)', default: false })
      .option('all', { type: 'boolean', describe: 'With --rollback: undo every migration', default: false })
      .option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const { knex } = await context.mailq();
    const sets = await context.migrationSets();
    const { out } = context.output;
    if (argv.status) {
      const status: MigrationStatus = { applied: [], pending: [] };
      for (const set of sets) {
        const { applied, pending } = await migrationStatus(knex, set);
        status.applied.push(...applied);
        status.pending.push(...pending);
      }
      if (argv.json) return void out(JSON.stringify(status));
      const rows = [...status.applied.map((name) => [name, 'applied']), ...status.pending.map((name) => [name, 'pending'])];
      return void out(table(['migration', 'state'], rows));
    }
    if (argv.rollback) {
      const undone: string[] = [];
      // An add-on's set first: it was applied after the queue's.
      for (const set of [...sets].reverse()) undone.push(...(await migrateRollback(knex, set, argv.all)));
      return void out(undone.length ? `Rolled back: ${undone.join(', ')}` : 'Nothing to roll back.');
    }
    const applied: string[] = [];
    for (const set of sets) applied.push(...(await migrateLatest(knex, set)));
    out(applied.length ? `Migrated: ${applied.join(', ')}` : 'Nothing to migrate: the schema is up to date.');
  },
});
