import { defineCommand } from '../command.js';
import { table } from '../output.js';

export const migrateCommand = defineCommand({
  command: 'migrate',
  describe: 'Create or upgrade the mailq tables',
  builder: (yargs) =>
    yargs
      .option('status', { type: 'boolean', describe: 'List applied and pending migrations', default: false })
      .option('rollback', { type: 'boolean', describe: 'Undo the last batch of migrations', default: false })
      .option('all', { type: 'boolean', describe: 'With --rollback: undo every migration', default: false })
      .option('json', { type: 'boolean', default: false }),
  async run(context, argv) {
    const mq = await context.mailq();
    const { out } = context.output;
    if (argv.status) {
      const status = await mq.migrationStatus();
      if (argv.json) return void out(JSON.stringify(status));
      const rows = [...status.applied.map((name) => [name, 'applied']), ...status.pending.map((name) => [name, 'pending'])];
      return void out(table(['migration', 'state'], rows));
    }
    if (argv.rollback) {
      const undone = await mq.rollback({ all: argv.all });
      return void out(undone.length ? `Rolled back: ${undone.join(', ')}` : 'Nothing to roll back.');
    }
    const applied = await mq.migrate();
    out(applied.length ? `Migrated: ${applied.join(', ')}` : 'Nothing to migrate: the schema is up to date.');
  },
});
